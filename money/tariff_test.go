package money

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"
)

// bj builds a Beijing wall-clock instant.
func bj(day, hour, minute int) time.Time {
	return time.Date(2026, time.November, day, hour, minute, 0, 0, Beijing)
}

// threeWay is 00:00–08:00, 08:00–16:00, 16:00–24:00 with distinct prices.
func threeWay() Tariff {
	return Tariff{ID: "three", Periods: []Period{
		{From: "00:00", To: "08:00", EnergyFenPerKWh: 30, ServiceFenPerKWh: 10},
		{From: "08:00", To: "16:00", EnergyFenPerKWh: 60, ServiceFenPerKWh: 20},
		{From: "16:00", To: "24:00", EnergyFenPerKWh: 90, ServiceFenPerKWh: 30},
	}}
}

func halfHours() Tariff {
	var t Tariff
	for i := 0; i < 48; i++ {
		t.Periods = append(t.Periods, Period{
			From: fmt.Sprintf("%02d:%02d", i/2, i%2*30),
			To:   fmt.Sprintf("%02d:%02d", (i+1)/2, (i+1)%2*30),
		})
	}
	return t
}

func TestBeijing(t *testing.T) {
	utc := time.Date(2026, 11, 26, 16, 30, 0, 0, time.UTC)
	got := BeijingTime(utc)
	if got.Hour() != 0 || got.Minute() != 30 || got.Day() != 27 || !got.Equal(utc) {
		t.Fatalf("BeijingTime(%v) = %v", utc, got)
	}
	if _, off := got.Zone(); off != 8*3600 {
		t.Fatalf("offset %d", off)
	}
}

func TestValidateGood(t *testing.T) {
	shuffled := DefaultTariff()
	p := shuffled.Periods
	p[0], p[8], p[3], p[5] = p[8], p[0], p[5], p[3]
	oddMinutes := Tariff{Periods: []Period{
		{From: "07:59", To: "24:00"},
		{From: "00:00", To: "00:01", EnergyFenPerKWh: MaxPriceFenPerKWh, ServiceFenPerKWh: MaxPriceFenPerKWh},
		{From: "00:01", To: "07:59"},
	}}
	for name, tr := range map[string]Tariff{
		"default":     DefaultTariff(),
		"whole day":   {Periods: []Period{{From: "00:00", To: "24:00", EnergyFenPerKWh: 50, ServiceFenPerKWh: 50}}},
		"shuffled":    shuffled,
		"48 periods":  halfHours(),
		"odd minutes": oddMinutes,
		"night split": {Periods: []Period{{From: "22:00", To: "24:00"}, {From: "06:00", To: "22:00"}, {From: "00:00", To: "06:00"}}},
	} {
		if err := tr.Validate(); err != nil {
			t.Errorf("%s: Validate() = %v", name, err)
		}
	}
}

func TestValidateBad(t *testing.T) {
	day := func(ps ...Period) Tariff { return Tariff{ID: "x", Periods: ps} }
	p := func(from, to string) Period {
		return Period{From: from, To: to, EnergyFenPerKWh: 10, ServiceFenPerKWh: 10}
	}
	tooMany := halfHours()
	tooMany.Periods = append(tooMany.Periods, p("00:00", "00:30"))
	for _, tc := range []struct {
		name  string
		t     Tariff
		index int
		field string
		why   string
	}{
		{"empty", day(), -1, "periods", "at least one"},
		{"49 periods", tooMany, -1, "periods", "at most 48"},
		{"gap", day(p("00:00", "08:00"), p("09:00", "24:00")), 1, "periods[1].from", "gap"},
		{"overlap", day(p("00:00", "08:00"), p("07:00", "24:00")), 1, "periods[1].from", "overlaps periods[0]"},
		{"duplicate", day(p("00:00", "24:00"), p("00:00", "24:00")), 1, "periods[1].from", "overlaps"},
		{"late start", day(p("01:00", "24:00")), 0, "periods[0].from", "starts at 00:00"},
		{"early end", day(p("00:00", "23:59")), 0, "periods[0].to", "ends at 24:00"},
		{"wrap-around", day(p("06:00", "22:00"), p("22:00", "06:00")), 1, "periods[1].to", "wrap midnight"},
		{"empty period", day(p("00:00", "00:00"), p("00:00", "24:00")), 0, "periods[0].to", "must be after"},
		{"24:00 as from", day(p("00:00", "24:00"), p("24:00", "24:00")), 1, "periods[1].from", "not a time"},
		{"24:01", day(p("00:00", "24:01")), 0, "periods[0].to", "not a time"},
		{"25:00", day(p("00:00", "12:00"), p("12:00", "25:00")), 1, "periods[1].to", "not a time"},
		{"minute 60", day(p("00:00", "07:60"), p("08:00", "24:00")), 0, "periods[0].to", "not a time"},
		{"one digit hour", day(p("0:00", "24:00")), 0, "periods[0].from", "not a time"},
		{"seconds", day(p("00:00:00", "24:00")), 0, "periods[0].from", "not a time"},
		{"dash", day(p("00-00", "24:00")), 0, "periods[0].from", "not a time"},
		{"fullwidth digit", day(p("０0:00", "24:00")), 0, "periods[0].from", "not a time"},
		{"blank", day(p("", "24:00")), 0, "periods[0].from", "not a time"},
		{"negative energy", day(Period{From: "00:00", To: "24:00", EnergyFenPerKWh: -1}), 0, "periods[0].energy_fen_per_kwh", "outside"},
		{"negative service", day(Period{From: "00:00", To: "24:00", ServiceFenPerKWh: -1}), 0, "periods[0].service_fen_per_kwh", "outside"},
		{"absurd price", day(Period{From: "00:00", To: "24:00", EnergyFenPerKWh: MaxPriceFenPerKWh + 1}), 0, "periods[0].energy_fen_per_kwh", "outside"},
	} {
		err := tc.t.Validate()
		var ve *ValidationError
		if !errors.As(err, &ve) || !errors.Is(err, ErrInvalidTariff) {
			t.Errorf("%s: Validate() = %v, want a *ValidationError", tc.name, err)
			continue
		}
		if ve.Index != tc.index || ve.Field != tc.field || !strings.Contains(ve.Reason, tc.why) {
			t.Errorf("%s: got %+v, want index %d field %q reason containing %q", tc.name, *ve, tc.index, tc.field, tc.why)
		}
	}
}

func TestValidateDoesNotAllocate(t *testing.T) {
	tr := DefaultTariff()
	if n := testing.AllocsPerRun(100, func() { _ = tr.Validate() }); n != 0 {
		t.Fatalf("Validate allocates %v times on a valid tariff", n)
	}
}

func TestTariffJSON(t *testing.T) {
	body := `{"periods":[{"from":"00:00","to":"08:00","energy_fen_per_kwh":40,"service_fen_per_kwh":30},` +
		`{"from":"08:00","to":"24:00","energy_fen_per_kwh":80,"service_fen_per_kwh":30}]}`
	var tr Tariff
	if err := json.Unmarshal([]byte(body), &tr); err != nil {
		t.Fatal(err)
	}
	if err := tr.Validate(); err != nil {
		t.Fatal(err)
	}
	if tr.Periods[1].EnergyFenPerKWh != 80 || tr.Periods[0].To != "08:00" {
		t.Fatalf("decoded %+v", tr)
	}
}

func TestPeriodAt(t *testing.T) {
	tr := DefaultTariff()
	for _, tc := range []struct {
		at   time.Time
		want int
	}{
		{bj(26, 0, 0), 0},
		{bj(26, 7, 59), 0},
		{bj(26, 8, 0), 1},
		{bj(26, 17, 0), 5},
		{bj(26, 23, 59), 8},
		{time.Date(2026, 11, 26, 15, 59, 59, 999999999, time.UTC), 8},            // 23:59:59.999999999 Beijing
		{time.Date(2026, 11, 26, 16, 0, 0, 0, time.UTC), 0},                      // Beijing midnight
		{time.Date(2026, 11, 26, 1, 0, 0, 0, time.FixedZone("EST", -5*3600)), 4}, // 06:00Z = 14:00 Beijing, 峰
	} {
		if got := tr.PeriodAt(tc.at); got != tc.want {
			t.Errorf("PeriodAt(%v) = %d, want %d", tc.at, got, tc.want)
		}
	}
	if got := (Tariff{}).PeriodAt(bj(26, 1, 0)); got != -1 {
		t.Errorf("empty tariff PeriodAt = %d, want -1", got)
	}
}

func TestAdd(t *testing.T) {
	def := DefaultTariff()
	three := threeWay()
	est := time.FixedZone("EST", -5*3600)
	split := func(n int, kv ...int64) Split {
		s := make(Split, n)
		for i := 0; i < len(kv); i += 2 {
			s[kv[i]] = kv[i+1]
		}
		return s
	}
	for _, tc := range []struct {
		name     string
		tr       Tariff
		from, to time.Time
		wh       int64
		want     Split
	}{
		{"inside one period", def, bj(26, 9, 0), bj(26, 9, 30), 100, split(9, 1, 100)},
		{"across a boundary 50/50", def, bj(26, 7, 30), bj(26, 8, 30), 1000, split(9, 0, 500, 1, 500)},
		{"from exactly at a boundary", def, bj(26, 8, 0), bj(26, 8, 30), 700, split(9, 1, 700)},
		{"to exactly at a boundary", def, bj(26, 7, 30), bj(26, 8, 0), 700, split(9, 0, 700)},
		{"sub-second boundary", def, bj(26, 7, 59).Add(59500 * time.Millisecond), bj(26, 8, 0).Add(500 * time.Millisecond), 2, split(9, 0, 1, 1, 1)},
		{"across midnight given UTC", def,
			time.Date(2026, 11, 26, 15, 30, 0, 0, time.UTC), time.Date(2026, 11, 26, 16, 30, 0, 0, time.UTC),
			600, split(9, 8, 300, 0, 300)},
		{"across midnight given EST", def,
			time.Date(2026, 11, 26, 10, 30, 0, 0, est), time.Date(2026, 11, 26, 11, 30, 0, 0, est),
			600, split(9, 8, 300, 0, 300)},
		// 48 h at 1 Wh per minute: each period gets 2 × its minutes.
		{"two whole days", def, bj(26, 0, 0), bj(28, 0, 0), 2880,
			Split{960, 240, 240, 240, 360, 240, 240, 240, 120}},
		// 07:00 day 1 → 09:00 day 3 = 50 h = 3000 min at 1 Wh/min.
		{"multi-day with partial ends", three, bj(26, 7, 0), bj(28, 9, 0), 3000,
			Split{60 + 480 + 480, 480 + 480 + 60, 480 + 480}},
		// A third each: 3.33 Wh, largest remainder with ties to the lower index.
		{"remainder, equal shares", three, bj(26, 0, 0), bj(27, 0, 0), 10, Split{4, 3, 3}},
		// 07:00→16:30 = 60+480+30 min of 570: shares 1.0526, 8.4210, 0.5263 of 10.
		{"remainder, largest wins", three, bj(26, 7, 0), bj(26, 16, 30), 10, Split{1, 8, 1}},
		{"zero energy", three, bj(26, 7, 0), bj(26, 9, 0), 0, Split{0, 0, 0}},
		{"zero-length interval goes to the period of to", def, bj(26, 8, 0), bj(26, 8, 0), 42, split(9, 1, 42)},
		{"clock backwards goes to the period of to", def, bj(26, 18, 0), bj(26, 7, 0), 42, split(9, 0, 42)},
	} {
		got, err := tc.tr.Add(nil, tc.from, 1_000_000, tc.to, 1_000_000+tc.wh)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: Add = %v, want %v", tc.name, got, tc.want)
		}
		if got.Total() != tc.wh {
			t.Errorf("%s: Σ = %d, want %d", tc.name, got.Total(), tc.wh)
		}
	}
}

func TestAddZonesAgree(t *testing.T) {
	tr := DefaultTariff()
	from := time.Date(2026, 11, 26, 21, 17, 13, 250_000_000, Beijing)
	to := from.Add(27*time.Hour + 41*time.Minute + 7*time.Second)
	want, err := tr.Add(nil, from, 5, to, 123_457)
	if err != nil {
		t.Fatal(err)
	}
	for _, loc := range []*time.Location{time.UTC, time.FixedZone("EST", -5*3600), time.FixedZone("NPT", 5*3600+45*60), time.FixedZone("LINT", 14*3600)} {
		got, err := tr.Add(nil, from.In(loc), 5, to.In(loc), 123_457)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("in %v: %v, %v; want %v", loc, got, err, want)
		}
	}
}

func TestAddAccumulatesWithoutMutating(t *testing.T) {
	tr := threeWay()
	s0 := Split{1, 2, 3}
	s1, err := tr.Add(s0, bj(26, 9, 0), 100, bj(26, 9, 1), 110)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s0, Split{1, 2, 3}) || !reflect.DeepEqual(s1, Split{1, 12, 3}) {
		t.Fatalf("s0 = %v, s1 = %v", s0, s1)
	}
}

func TestAddErrors(t *testing.T) {
	tr := threeWay()
	s := Split{1, 2, 3}
	check := func(name string, got Split, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: err = %v, want %v", name, err, want)
		}
		if !reflect.DeepEqual(got, Split{1, 2, 3}) || !reflect.DeepEqual(s, Split{1, 2, 3}) {
			t.Errorf("%s: split changed: got %v, s %v", name, got, s)
		}
	}
	got, err := tr.Add(s, bj(26, 9, 0), 500, bj(26, 9, 1), 499)
	check("backwards", got, err, ErrMeterBackwards)
	got, err = tr.Add(s, bj(26, 9, 0), -5, bj(26, 9, 1), 10)
	check("negative register", got, err, ErrBadSplit)
	got, err = tr.Add(s[:2:2], bj(26, 9, 0), 0, bj(26, 9, 1), 10)
	if !errors.Is(err, ErrBadSplit) || len(got) != 2 {
		t.Errorf("short split: %v, %v", got, err)
	}
	got, err = tr.Add(Split{1 << 62, 1 << 62, 1<<63 - 1}, bj(26, 17, 0), 0, bj(26, 17, 1), 10)
	if !errors.Is(err, ErrBadSplit) || got[2] != 1<<63-1 {
		t.Errorf("overflow: %v, %v", got, err)
	}
	bad := Tariff{Periods: []Period{{From: "00:00", To: "12:00"}}}
	if _, err := bad.Add(nil, bj(26, 9, 0), 0, bj(26, 9, 1), 10); !errors.Is(err, ErrInvalidTariff) {
		t.Errorf("invalid tariff: err = %v", err)
	}
}

func TestAddAllocs(t *testing.T) {
	tr := DefaultTariff()
	s := make(Split, len(tr.Periods))
	n := testing.AllocsPerRun(100, func() {
		_, _ = tr.Add(s, bj(26, 7, 59), 100, bj(26, 8, 0).Add(10*time.Second), 130)
	})
	if n > 1 {
		t.Fatalf("Add allocates %v times, want ≤ 1 (the new Split)", n)
	}
}

func TestPriceRounding(t *testing.T) {
	one := func(energy, service Fen) Tariff {
		return Tariff{Periods: []Period{{From: "00:00", To: "24:00", EnergyFenPerKWh: energy, ServiceFenPerKWh: service}}}
	}
	for _, tc := range []struct {
		name          string
		tr            Tariff
		s             Split
		energy, servi Fen
	}{
		{"x.5 rounds up", one(1, 3), Split{500}, 1, 2},              // 0.5 → 1, 1.5 → 2
		{"x.499 rounds down", one(1, 3), Split{499}, 0, 1},          // 0.499 → 0, 1.497 → 1
		{"x.501 rounds up", one(1, 3), Split{501}, 1, 2},            // 0.501 → 1, 1.503 → 2
		{"2.5 rounds up, not to even", one(5, 0), Split{500}, 3, 0}, // 2.5 → 3 (half-up, not banker's)
		{"exact", one(100, 40), Split{12_345}, 1235, 494},           // 1234.5 → 1235, 493.8 → 494
		{"large", one(MaxPriceFenPerKWh, MaxPriceFenPerKWh), Split{1_000_000_000}, 100_000_000_000, 100_000_000_000},
	} {
		b := tc.tr.Price(tc.s, 0)
		if b.Lines[0].AmountFen != tc.energy || b.Lines[1].AmountFen != tc.servi || b.TotalFen != tc.energy+tc.servi || b.Capped {
			t.Errorf("%s: %+v, want %d + %d", tc.name, b, tc.energy, tc.servi)
		}
	}

	// Per line, not per period: with 1 fen/kWh, two periods of 500 Wh are
	// 0.5 fen each. Once per line: 1.0 → 1 fen. Per period it would be
	// 1 + 1 = 2. And two periods of 400 Wh: 0.8 → 1 fen, per period 0 + 0.
	two := Tariff{Periods: []Period{
		{From: "00:00", To: "12:00", EnergyFenPerKWh: 1, ServiceFenPerKWh: 1},
		{From: "12:00", To: "24:00", EnergyFenPerKWh: 1, ServiceFenPerKWh: 1},
	}}
	for _, tc := range []struct {
		s               Split
		perLine, perPer Fen
	}{{Split{500, 500}, 1, 2}, {Split{400, 400}, 1, 0}} {
		b := two.Price(tc.s, 0)
		var perPeriod Fen
		for i, wh := range tc.s {
			perPeriod += (Fen(wh)*two.Periods[i].EnergyFenPerKWh + 500) / 1000
		}
		if b.Lines[0].AmountFen != tc.perLine || perPeriod != tc.perPer || perPeriod == b.Lines[0].AmountFen {
			t.Errorf("split %v: per line %d (want %d), per period %d (want %d)", tc.s, b.Lines[0].AmountFen, tc.perLine, perPeriod, tc.perPer)
		}
	}
}

func TestPriceLinesAndZero(t *testing.T) {
	b := DefaultTariff().Price(make(Split, 9), 500)
	want := Bill{Lines: []Line{{Name: LineEnergy}, {Name: LineService}}}
	if !reflect.DeepEqual(b, want) {
		t.Fatalf("zero energy: %+v", b)
	}
	b = DefaultTariff().Price(nil, 0)
	if !reflect.DeepEqual(b, want) {
		t.Fatalf("nil split: %+v", b)
	}
	// 07:30 → 08:30, 7 kWh: 3.5 kWh 谷 + 3.5 kWh 平.
	b = DefaultTariff().Price(Split{3500, 3500, 0, 0, 0, 0, 0, 0, 0}, 0)
	if b.EnergyWh != 7000 || b.Lines[0] != (Line{LineEnergy, 315, 7000}) || b.Lines[1] != (Line{LineService, 280, 7000}) || b.TotalFen != 595 {
		t.Fatalf("bill %+v", b)
	}
}

func TestPriceCap(t *testing.T) {
	// 10 kWh at 60 + 40 fen/kWh: 600 + 400 = 1000 fen.
	tr := Tariff{Periods: []Period{{From: "00:00", To: "24:00", EnergyFenPerKWh: 60, ServiceFenPerKWh: 40}}}
	s := Split{10_000}
	for _, tc := range []struct {
		cap       Fen
		e, sv     Fen
		total     Fen
		capped    bool
		situation string
	}{
		{0, 600, 400, 1000, false, "no cap"},
		{-1, 600, 400, 1000, false, "negative cap means none"},
		{2000, 600, 400, 1000, false, "under the cap"},
		{1000, 600, 400, 1000, false, "exactly the cap"},
		{999, 599, 400, 999, true, "one over: 599.4 + 399.6, the spare fen to the larger remainder"},
		{501, 301, 200, 501, true, "300.6 + 200.4: spare fen to 电费"},
		{500, 300, 200, 500, true, "exact scale"},
		{1, 1, 0, 1, true, "0.6 + 0.4"},
	} {
		b := tr.Price(s, tc.cap)
		if b.Lines[0].AmountFen != tc.e || b.Lines[1].AmountFen != tc.sv || b.TotalFen != tc.total || b.Capped != tc.capped {
			t.Errorf("cap %d (%s): %+v, want %d + %d = %d capped %v", tc.cap, tc.situation, b, tc.e, tc.sv, tc.total, tc.capped)
		}
	}
	// Equal remainders (0.5 + 0.5): the tie goes to 电费.
	even := Tariff{Periods: []Period{{From: "00:00", To: "24:00", EnergyFenPerKWh: 50, ServiceFenPerKWh: 50}}}
	if b := even.Price(Split{20}, 1); b.Lines[0].AmountFen != 1 || b.Lines[1].AmountFen != 0 {
		t.Errorf("tie: %+v", b)
	}
	// A zero line stays zero when scaled.
	free := Tariff{Periods: []Period{{From: "00:00", To: "24:00", EnergyFenPerKWh: 100}}}
	if b := free.Price(Split{10_000}, 7); b.Lines[0].AmountFen != 7 || b.Lines[1].AmountFen != 0 || !b.Capped {
		t.Errorf("zero service line: %+v", b)
	}
}

func TestPriceAllocs(t *testing.T) {
	tr := DefaultTariff()
	s := Split{1000, 2000, 3000, 0, 0, 5000, 0, 0, 7}
	if n := testing.AllocsPerRun(100, func() { _ = tr.Price(s, 1000) }); n > 1 {
		t.Fatalf("Price allocates %v times, want ≤ 1 (the lines)", n)
	}
}

func TestPriceTotalOnGarbage(t *testing.T) {
	// Never panics, never negative, total == Σ lines, even for inputs no
	// validated tariff or Add can produce.
	tr := Tariff{Periods: []Period{
		{EnergyFenPerKWh: 1<<63 - 1, ServiceFenPerKWh: 1<<63 - 1},
		{EnergyFenPerKWh: -5, ServiceFenPerKWh: 1 << 62},
	}}
	for _, s := range []Split{{1<<63 - 1, 1<<63 - 1, 99}, {-1, 5}, {1}, nil} {
		b := tr.Price(s, 0)
		if b.Lines[0].AmountFen < 0 || b.Lines[1].AmountFen < 0 || b.Lines[0].AmountFen+b.Lines[1].AmountFen != b.TotalFen || b.EnergyWh < 0 {
			t.Errorf("split %v: %+v", s, b)
		}
	}
}

func TestMaxEnergyWh(t *testing.T) {
	def := DefaultTariff() // most expensive: 尖 120 + 40 = 160 fen/kWh
	for _, tc := range []struct {
		tr   Tariff
		cap  Fen
		want int64
	}{
		{def, 1000, 6249}, // (1_000_000 − 1) / 160
		{def, 0, 0},
		{def, -10, 0},
		{def, 1, 6}, // 999 / 160
		{Tariff{Periods: []Period{{From: "00:00", To: "24:00"}}}, 1000, NoPriceEnergyLimitWh},
		{Tariff{}, 1000, NoPriceEnergyLimitWh},
		{Tariff{Periods: []Period{{From: "00:00", To: "24:00", ServiceFenPerKWh: 1}}}, 1<<63 - 1, 1<<63 - 1}, // saturates
	} {
		if got := tc.tr.MaxEnergyWh(tc.cap); got != tc.want {
			t.Errorf("MaxEnergyWh(%d) = %d, want %d", tc.cap, got, tc.want)
		}
	}
	for cap := Fen(1); cap < 3000; cap++ {
		w := def.MaxEnergyWh(cap)
		if b := def.Price(Split{0, 0, 0, 0, 0, w, 0, 0, 0}, 0); b.TotalFen > cap {
			t.Fatalf("cap %d: %d Wh at 尖 bills %d", cap, w, b.TotalFen)
		}
	}

	// Why the −1: at 125 + 75 fen/kWh, 100 Wh is exactly 20 fen of energy,
	// but 12.5 and 7.5 both round up: 13 + 8 = 21. MaxEnergyWh(20) is 99.
	tr := Tariff{Periods: []Period{{From: "00:00", To: "24:00", EnergyFenPerKWh: 125, ServiceFenPerKWh: 75}}}
	if b := tr.Price(Split{100}, 0); b.TotalFen != 21 {
		t.Fatalf("naive limit bills %d, the test premise is wrong", b.TotalFen)
	}
	if got := tr.MaxEnergyWh(20); got != 99 {
		t.Fatalf("MaxEnergyWh(20) = %d, want 99", got)
	}
	if b := tr.Price(Split{99}, 0); b.TotalFen > 20 {
		t.Fatalf("99 Wh bills %d > 20", b.TotalFen)
	}
}

func TestDefaultTariff(t *testing.T) {
	tr := DefaultTariff()
	if tr.ID != "default" || tr.Validate() != nil || len(tr.Periods) != 9 {
		t.Fatalf("%+v: %v", tr, tr.Validate())
	}
	if tr.PeriodAt(bj(26, 18, 0)) != 5 || tr.Periods[5].EnergyFenPerKWh != 120 {
		t.Fatal("17:00–19:00 should be 尖 at 120")
	}
}

// bigShare is the exact share e×w/total as a big.Rat, for oracles.
func bigShare(e, w, total int64) *big.Rat {
	return new(big.Rat).SetFrac(new(big.Int).Mul(big.NewInt(e), big.NewInt(w)), big.NewInt(total))
}

func BenchmarkAdd(b *testing.B) {
	tr := DefaultTariff()
	s := make(Split, len(tr.Periods))
	from := bj(26, 7, 59).Add(55 * time.Second)
	b.Run("boundary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tr.Add(s, from, 100, from.Add(10*time.Second), 120); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("inside", func(b *testing.B) {
		b.ReportAllocs()
		inside := bj(26, 9, 0)
		for b.Loop() {
			if _, err := tr.Add(s, inside, 100, inside.Add(10*time.Second), 120); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("48periods-2days", func(b *testing.B) {
		b.ReportAllocs()
		hh := halfHours()
		s48 := make(Split, 48)
		for b.Loop() {
			if _, err := hh.Add(s48, from, 100, from.Add(49*time.Hour+7*time.Second), 1_000_099); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkPrice(b *testing.B) {
	tr := DefaultTariff()
	s := Split{1000, 2000, 3000, 0, 0, 5000, 0, 0, 7}
	b.ReportAllocs()
	for b.Loop() {
		_ = tr.Price(s, 1000)
	}
}
