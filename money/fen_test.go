package money

import (
	"errors"
	"testing"
)

func TestYuanRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		fen  Fen
		yuan string
	}{{0, "0.00"}, {1, "0.01"}, {10, "0.10"}, {1230, "12.30"}, {100, "1.00"}, {-5, "-0.05"}, {123456789, "1234567.89"}} {
		if got := tc.fen.Yuan(); got != tc.yuan {
			t.Errorf("%d.Yuan() = %q, want %q", tc.fen, got, tc.yuan)
		}
		if tc.fen < 0 {
			continue
		}
		back, err := ParseYuan(tc.yuan)
		if err != nil || back != tc.fen {
			t.Errorf("ParseYuan(%q) = %d, %v; want %d", tc.yuan, back, err, tc.fen)
		}
	}
}

func TestParseYuan(t *testing.T) {
	ok := map[string]Fen{"12": 1200, "12.3": 1230, "12.30": 1230, "0.01": 1, "007.50": 750}
	for s, want := range ok {
		if got, err := ParseYuan(s); err != nil || got != want {
			t.Errorf("ParseYuan(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", ".5", "1.", "1.234", "-1.00", "+1", "1e3", " 1.00", "1,000.00", "１.00", "abc", "99999999999999999.00", "NaN"} {
		if _, err := ParseYuan(s); !errors.Is(err, ErrBadYuan) {
			t.Errorf("ParseYuan(%q) err = %v, want ErrBadYuan", s, err)
		}
	}
}

func FuzzParseYuan(f *testing.F) {
	for _, s := range []string{"12.30", "0.01", "1", "1.2", "-1", "1e9", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseYuan(s)
		if err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("ParseYuan(%q) = %d < 0", s, v)
		}
		again, err := ParseYuan(v.Yuan())
		if err != nil || again != v {
			t.Fatalf("round trip of %q: %q -> %d, %v", s, v.Yuan(), again, err)
		}
	})
}
