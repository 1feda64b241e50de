package money

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// FuzzTariff: any JSON → Validate never panics; a tariff that validates
// never makes Add, Price, PeriodAt or MaxEnergyWh panic, and their invariants
// hold; one that does not is refused by Add.
func FuzzTariff(f *testing.F) {
	def, _ := json.Marshal(DefaultTariff())
	f.Add(def, int64(1764120600), int64(900), int64(1000), int64(7000), int64(500))
	for _, s := range []string{
		`{"periods":[{"from":"00:00","to":"24:00","energy_fen_per_kwh":40,"service_fen_per_kwh":30}]}`,
		`{"periods":[{"from":"22:00","to":"06:00"},{"from":"06:00","to":"22:00"}]}`,
		`{"periods":[{"from":"12:00","to":"24:00","energy_fen_per_kwh":100000},{"from":"00:00","to":"12:00","service_fen_per_kwh":100000}]}`,
		`{"periods":[{"from":"00:00","to":"24:00","energy_fen_per_kwh":-1}]}`,
		`{"periods":[]}`, `{}`, `null`, `{"periods":[{"from":"24:00","to":"24:00"}]}`,
	} {
		f.Add([]byte(s), int64(1764120600), int64(86400*3+5), int64(0), int64(123456), int64(0))
	}
	f.Add(def, int64(-1<<62), int64(1<<62), int64(0), int64(1<<62), int64(1<<62))
	f.Fuzz(func(t *testing.T, data []byte, fromSec, durSec, fromWh, dWh, capFen int64) {
		var tr Tariff
		if json.Unmarshal(data, &tr) != nil {
			return
		}
		from := time.Unix(fromSec, 0)
		to := time.Unix(fromSec+durSec, 0)
		_ = tr.PeriodAt(from)
		_ = tr.MaxEnergyWh(Fen(capFen))
		checkBill(t, tr.Price(Split{dWh, fromWh, durSec}, Fen(capFen)), Fen(capFen))
		if err := tr.Validate(); err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field == "" || ve.Index >= len(tr.Periods) {
				t.Fatalf("Validate() = %#v", err)
			}
			if _, err := tr.Add(nil, from, 0, to, 1); !errors.Is(err, ErrInvalidTariff) {
				t.Fatalf("Add on an invalid tariff: %v", err)
			}
			return
		}
		if p := tr.PeriodAt(from); p < 0 || p >= len(tr.Periods) {
			t.Fatalf("PeriodAt = %d", p)
		}
		toWh := fromWh + dWh
		s, err := tr.Add(nil, from, fromWh, to, toWh)
		switch {
		case fromWh < 0 || toWh < 0 || (dWh > 0 && toWh < fromWh): // negative or overflowed
			if err == nil {
				t.Fatalf("Add(%d → %d) accepted", fromWh, toWh)
			}
			return
		case toWh < fromWh:
			if !errors.Is(err, ErrMeterBackwards) {
				t.Fatalf("backwards: %v", err)
			}
			return
		case err != nil:
			t.Fatalf("Add: %v", err)
		}
		if s.Total() != toWh-fromWh {
			t.Fatalf("Σ %v = %d, want %d", s, s.Total(), toWh-fromWh)
		}
		for _, v := range s {
			if v < 0 {
				t.Fatalf("negative part in %v", s)
			}
		}
		b := tr.Price(s, Fen(capFen))
		checkBill(t, b, Fen(capFen))
		if w := tr.MaxEnergyWh(Fen(capFen)); capFen > 0 && w < 0 {
			t.Fatalf("MaxEnergyWh = %d", w)
		}
	})
}

// FuzzPrice: arbitrary prices (valid or not), energies and caps never make
// Price panic or break its invariants; for validated prices and realistic
// energies the lines equal the math/big oracle.
func FuzzPrice(f *testing.F) {
	f.Add(int64(30), int64(40), int64(3500), int64(60), int64(40), int64(3500), int64(0))
	f.Add(int64(1), int64(1), int64(500), int64(1), int64(1), int64(500), int64(1))
	f.Add(int64(125), int64(75), int64(100), int64(0), int64(0), int64(0), int64(20))
	f.Add(int64(1<<63-1), int64(-1), int64(1<<63-1), int64(1<<62), int64(5), int64(-7), int64(3))
	f.Fuzz(func(t *testing.T, e0, s0, wh0, e1, s1, wh1, capFen int64) {
		tr := Tariff{Periods: []Period{
			{From: "00:00", To: "12:00", EnergyFenPerKWh: Fen(e0), ServiceFenPerKWh: Fen(s0)},
			{From: "12:00", To: "24:00", EnergyFenPerKWh: Fen(e1), ServiceFenPerKWh: Fen(s1)},
		}}
		s := Split{wh0, wh1}
		b := tr.Price(s, Fen(capFen))
		checkBill(t, b, Fen(capFen))
		_ = tr.MaxEnergyWh(Fen(capFen))
		if tr.Validate() != nil || wh0 < 0 || wh1 < 0 || wh0 > 1e12 || wh1 > 1e12 {
			return
		}
		e, sv := priceOracle(tr, s)
		if capFen <= 0 || e+sv <= Fen(capFen) {
			if b.Capped || b.Lines[0].AmountFen != e || b.Lines[1].AmountFen != sv {
				t.Fatalf("%+v, oracle %d + %d", b, e, sv)
			}
		} else if !b.Capped || b.Lines[0].AmountFen > e || b.Lines[1].AmountFen > sv {
			t.Fatalf("%+v, oracle %d + %d, cap %d", b, e, sv, capFen)
		}
		if w := tr.MaxEnergyWh(Fen(capFen)); capFen > 0 && w <= 1e12 && w > 0 {
			for _, split := range []Split{{w, 0}, {0, w}, {w / 2, w - w/2}} {
				if got := tr.Price(split, 0).TotalFen; got > Fen(capFen) {
					t.Fatalf("MaxEnergyWh(%d) = %d, split %v bills %d", capFen, w, split, got)
				}
			}
		}
	})
}
