package money

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"
)

// Beijing is the tariff's clock: China Standard Time, UTC+8, no daylight
// saving. It is a fixed zone on purpose: time-of-use periods are local Beijing
// time whatever the server's TZ or tzdata say, so never use time.Local here.
var Beijing = time.FixedZone("CST", 8*3600)

// BeijingTime returns t in Beijing time (same instant, Beijing wall clock).
func BeijingTime(t time.Time) time.Time { return t.In(Beijing) }

// Tariff limits, checked by Validate.
const (
	// MaxPeriods bounds the number of time-of-use periods (half-hour windows).
	MaxPeriods = 48
	// MaxPriceFenPerKWh is the largest accepted price, energy or service:
	// 1000 yuan/kWh, far above any real tariff, low enough that no product
	// in this file comes near overflowing.
	MaxPriceFenPerKWh Fen = 100000
	// NoPriceEnergyLimitWh is what MaxEnergyWh answers for a tariff where
	// every period is free: the cap cannot bound the energy, so a sane
	// hardware-level limit (1 MWh) is used instead of "unlimited".
	NoPriceEnergyLimitWh int64 = 1_000_000
)

// Bill line names, as sent in Pay Score post_payments.
const (
	LineEnergy  = "电费"
	LineService = "服务费"
)

// ErrInvalidTariff is wrapped by every *ValidationError, and returned
// (wrapped) by Add when the tariff does not validate.
var ErrInvalidTariff = errors.New("invalid tariff")

// ErrMeterBackwards is returned (wrapped) by Add when the end register is
// below the start register. Nothing is attributed; the caller flags the
// session (meter_anomaly) and decides what to bill.
var ErrMeterBackwards = errors.New("meter register went backwards")

// ErrBadSplit is returned (wrapped) by Add when the Split does not belong to
// the tariff (wrong length), a register is negative, or a sum would overflow.
var ErrBadSplit = errors.New("bad energy split")

// Period is one time-of-use window, local Beijing time, "HH:MM" (To may be
// "24:00"). The window is half-open: [From, To).
type Period struct {
	From             string `json:"from"`
	To               string `json:"to"`
	EnergyFenPerKWh  Fen    `json:"energy_fen_per_kwh"`
	ServiceFenPerKWh Fen    `json:"service_fen_per_kwh"`
}

// Tariff is a day of time-of-use periods. Index i of a Split is the energy of
// Periods[i], so the order of Periods is part of a Split's meaning: a session
// keeps the snapshot of the tariff it was priced with, not just its ID.
type Tariff struct {
	ID      string   `json:"id"`
	Periods []Period `json:"periods"`
}

// ValidationError says which field of a tariff is wrong. Field is the JSON
// path as an API client wrote it ("periods[2].to", or "periods" for the
// list as a whole); Index is the period index, -1 for the list as a whole.
type ValidationError struct {
	Index  int
	Field  string
	Reason string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap makes errors.Is(err, ErrInvalidTariff) true.
func (e *ValidationError) Unwrap() error { return ErrInvalidTariff }

func periodErr(i int, field, format string, args ...any) *ValidationError {
	return &ValidationError{Index: i, Field: fmt.Sprintf("periods[%d].%s", i, field), Reason: fmt.Sprintf(format, args...)}
}

const (
	minutesPerDay = 24 * 60
	nsPerMinute   = int64(time.Minute)
	nsPerDay      = int64(24 * time.Hour)
	secPerDay     = 24 * 3600
	beijingOffset = 8 * 3600
	// maxExactSpanDays bounds the intervals Add splits exactly in
	// nanoseconds without overflowing int64 (100000 days ≈ 273 years).
	maxExactSpanDays = 100000
)

// span is a parsed period: [from, to) in minutes since Beijing midnight.
type span struct{ from, to int32 }

// parseHHMM parses "HH:MM" into minutes since midnight. "24:00" is accepted
// only when allow24 (a To); anything else must be 00:00..23:59, two digits each.
func parseHHMM(s string, allow24 bool) (int32, bool) {
	if len(s) != 5 || s[2] != ':' {
		return 0, false
	}
	for _, i := range [4]int{0, 1, 3, 4} {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	h := int32(s[0]-'0')*10 + int32(s[1]-'0')
	m := int32(s[3]-'0')*10 + int32(s[4]-'0')
	if m > 59 {
		return 0, false
	}
	if h == 24 && m == 0 && allow24 {
		return minutesPerDay, true
	}
	if h > 23 {
		return 0, false
	}
	return h*60 + m, true
}

// Validate checks that the periods cover exactly the whole Beijing day
// [00:00, 24:00) with no gap and no overlap (in any order; a period may not
// wrap midnight, so a 22:00–06:00 night is two periods), that every time is
// "HH:MM" with minutes 0..59 ("24:00" only as a To), that every price is in
// 0..MaxPriceFenPerKWh, and that there are 1..MaxPeriods periods. The ID is
// not checked (it comes from the URL). The error is a *ValidationError for
// the first problem found (period fields in index order, then coverage).
// Validate does not allocate when the tariff is valid.
func (t Tariff) Validate() error {
	var sp [MaxPeriods]span
	return t.parse(&sp)
}

// parse validates t and fills sp[:len(t.Periods)] with the parsed windows.
func (t Tariff) parse(sp *[MaxPeriods]span) error {
	n := len(t.Periods)
	if n == 0 {
		return &ValidationError{Index: -1, Field: "periods", Reason: "at least one period is required"}
	}
	if n > MaxPeriods {
		return &ValidationError{Index: -1, Field: "periods", Reason: fmt.Sprintf("at most %d periods are allowed, got %d", MaxPeriods, n)}
	}
	for i, p := range t.Periods {
		from, ok := parseHHMM(p.From, false)
		if !ok {
			return periodErr(i, "from", "%q is not a time of day HH:MM (00:00..23:59)", p.From)
		}
		to, ok := parseHHMM(p.To, true)
		if !ok {
			return periodErr(i, "to", "%q is not a time of day HH:MM (00:01..24:00)", p.To)
		}
		if to <= from {
			return periodErr(i, "to", "%q must be after from %q (a period may not wrap midnight: split it at 24:00)", p.To, p.From)
		}
		if p.EnergyFenPerKWh < 0 || p.EnergyFenPerKWh > MaxPriceFenPerKWh {
			return periodErr(i, "energy_fen_per_kwh", "%d is outside 0..%d", int64(p.EnergyFenPerKWh), int64(MaxPriceFenPerKWh))
		}
		if p.ServiceFenPerKWh < 0 || p.ServiceFenPerKWh > MaxPriceFenPerKWh {
			return periodErr(i, "service_fen_per_kwh", "%d is outside 0..%d", int64(p.ServiceFenPerKWh), int64(MaxPriceFenPerKWh))
		}
		sp[i] = span{from, to}
	}
	// Coverage: order the indices by start (insertion sort on a stack
	// array: n ≤ 48 and no allocation), then walk the day.
	var ord [MaxPeriods]int8
	for i := 0; i < n; i++ {
		j := i
		for ; j > 0 && sp[ord[j-1]].from > sp[i].from; j-- {
			ord[j] = ord[j-1]
		}
		ord[j] = int8(i)
	}
	first := int(ord[0])
	if sp[first].from != 0 {
		return periodErr(first, "from", "the day starts at 00:00 but the earliest period starts at %q (gap)", t.Periods[first].From)
	}
	for k := 1; k < n; k++ {
		prev, cur := int(ord[k-1]), int(ord[k])
		switch {
		case sp[cur].from < sp[prev].to:
			return periodErr(cur, "from", "%q overlaps periods[%d] (%s–%s)", t.Periods[cur].From, prev, t.Periods[prev].From, t.Periods[prev].To)
		case sp[cur].from > sp[prev].to:
			return periodErr(cur, "from", "%q leaves a gap after periods[%d] which ends at %q", t.Periods[cur].From, prev, t.Periods[prev].To)
		}
	}
	if last := int(ord[n-1]); sp[last].to != minutesPerDay {
		return periodErr(last, "to", "the day ends at 24:00 but the latest period ends at %q (gap)", t.Periods[last].To)
	}
	return nil
}

// beijingDay splits an instant into the Beijing calendar day number (days
// since 1970-01-01 Beijing) and the nanoseconds since that Beijing midnight.
// Plain integer arithmetic: no time.In, no allocation, no overflow for any
// time.Time.
func beijingDay(t time.Time) (day, ns int64) {
	sec := t.Unix()
	day, rem := sec/secPerDay, sec%secPerDay
	if rem < 0 {
		day--
		rem += secPerDay
	}
	rem += beijingOffset
	if rem >= secPerDay {
		day++
		rem -= secPerDay
	}
	return day, rem*int64(time.Second) + int64(t.Nanosecond())
}

// PeriodAt returns the index of the period containing at (Beijing time), or
// -1 if no period does (only possible for a tariff that does not Validate).
func (t Tariff) PeriodAt(at time.Time) int {
	_, ns := beijingDay(at)
	minute := int32(ns / nsPerMinute)
	for i, p := range t.Periods {
		from, ok1 := parseHHMM(p.From, false)
		to, ok2 := parseHHMM(p.To, true)
		if ok1 && ok2 && from <= minute && minute < to {
			return i
		}
	}
	return -1
}

// Split is energy in Wh per period index of the tariff it was built with
// (len == len(t.Periods)). A plain slice so that it is cheap to store in the
// persisted session record.
type Split []int64

// Total is the energy of the split in Wh.
func (s Split) Total() int64 {
	var sum int64
	for _, v := range s {
		sum += v
	}
	return sum
}

// Add attributes the energy delivered between two meter samples (register
// fromWh at from, register toWh at to) to the periods, proportionally to how
// much of the interval [from, to) falls in each period, in Beijing time,
// across midnight and across any number of days (power is assumed constant
// between two samples: that is all the samples tell).
//
// Contract:
//   - s is not modified: Add returns a new Split (one allocation), s plus the
//     new energy. A nil or empty s means "nothing yet".
//   - The parts are integer Wh and sum EXACTLY to toWh−fromWh. They are the
//     largest-remainder rounding of the exact proportional shares: every
//     period gets the floor of its share, and the Wh left over go one each
//     to the periods with the largest remainders (ties: lower index). So each
//     part differs from its exact share by less than 1 Wh.
//   - If to <= from (zero-length interval, or clocks out of order), all the
//     energy goes to the period containing to.
//   - Errors add nothing: toWh < fromWh (ErrMeterBackwards), a negative
//     register or a Split of the wrong length or overflowing (ErrBadSplit), a
//     tariff that does not Validate (ErrInvalidTariff).
//
// Intervals longer than 100000 days (clock garbage, not charging) are split
// by the day's period lengths alone.
func (t Tariff) Add(s Split, from time.Time, fromWh int64, to time.Time, toWh int64) (Split, error) {
	var sp [MaxPeriods]span
	if err := t.parse(&sp); err != nil {
		return s, fmt.Errorf("money: add energy: %w", err)
	}
	n := len(t.Periods)
	if len(s) != 0 && len(s) != n {
		return s, fmt.Errorf("money: add energy: %w: split has %d periods, tariff %q has %d", ErrBadSplit, len(s), t.ID, n)
	}
	if fromWh < 0 || toWh < 0 {
		return s, fmt.Errorf("money: add energy: %w: negative register (%d → %d Wh)", ErrBadSplit, fromWh, toWh)
	}
	if toWh < fromWh {
		return s, fmt.Errorf("money: add energy: %w: %d → %d Wh", ErrMeterBackwards, fromWh, toWh)
	}
	delta := toWh - fromWh // cannot overflow: both non-negative

	var part [MaxPeriods]int64
	dayFrom, nsFrom := beijingDay(from)
	dayTo, nsTo := beijingDay(to)
	// Order is decided on the same (day, ns) figures the weights use, not
	// with to.After(from): for absurd time.Time values the two can disagree,
	// and the weights must never go negative.
	if dayTo < dayFrom || (dayTo == dayFrom && nsTo <= nsFrom) {
		minute := int32(nsTo / nsPerMinute)
		for i := 0; i < n; i++ {
			if sp[i].from <= minute && minute < sp[i].to {
				part[i] = delta
				break
			}
		}
	} else if delta > 0 {
		distribute(&part, &sp, n, uint64(delta), dayTo-dayFrom, nsFrom, nsTo)
	}

	out := make(Split, n)
	copy(out, s)
	for i := 0; i < n; i++ {
		if part[i] > math.MaxInt64-out[i] {
			return s, fmt.Errorf("money: add energy: %w: period %d overflows", ErrBadSplit, i)
		}
		out[i] += part[i]
	}
	return out, nil
}

// overlap is how much of [from, from+len) lies in [0, x): the part of a
// period before x on a day.
func overlap(x, from, length int64) int64 {
	return min(max(x-from, 0), length)
}

// distribute fills part with the largest-remainder split of e over the
// periods, weighted by the nanoseconds of the interval in each. The interval
// starts nsFrom into a Beijing day and ends nsTo into the day `days` later.
func distribute(part *[MaxPeriods]int64, sp *[MaxPeriods]span, n int, e uint64, days, nsFrom, nsTo int64) {
	var w [MaxPeriods]int64
	var total int64
	for i := 0; i < n; i++ {
		a := int64(sp[i].from) * nsPerMinute
		l := int64(sp[i].to-sp[i].from) * nsPerMinute
		if days > maxExactSpanDays {
			w[i] = l
		} else {
			// Whole days contribute the period's full length each; the
			// partial ends add what lies before nsTo and remove what lies
			// before nsFrom. Bounded by 100001 days of ns < 2^63.
			w[i] = days*l + overlap(nsTo, a, l) - overlap(nsFrom, a, l)
		}
		total += w[i]
	}
	// Σw is the interval length in ns (the periods partition the day), > 0.
	var rem [MaxPeriods]uint64
	var given uint64
	for i := 0; i < n; i++ {
		if w[i] <= 0 {
			continue
		}
		// e*w/total in 128 bits; the quotient ≤ e fits 64 bits, so hi < total.
		hi, lo := bits.Mul64(e, uint64(w[i]))
		q, r := bits.Div64(hi, lo, uint64(total))
		part[i] = int64(q)
		rem[i] = r
		given += q
	}
	// Fewer Wh are left than periods with a non-zero remainder (the
	// remainders sum to left*total), so every pick below finds one.
	for left := e - given; left > 0; left-- {
		best := -1
		for i := 0; i < n; i++ {
			if rem[i] > 0 && (best < 0 || rem[i] > rem[best]) {
				best = i
			}
		}
		part[best]++
		rem[best] = 0
	}
}

// Line is one item of a bill, as sent in Pay Score post_payments.
type Line struct {
	Name      string `json:"name"`
	AmountFen Fen    `json:"amount_fen"`
	EnergyWh  int64  `json:"energy_wh"`
}

// Bill is a priced split.
type Bill struct {
	EnergyWh int64  `json:"energy_wh"`
	Lines    []Line `json:"lines"`
	TotalFen Fen    `json:"total_fen"`
	Capped   bool   `json:"capped"`
}

// u128 is an unsigned 128-bit accumulator for exact fen×Wh sums.
type u128 struct{ hi, lo uint64 }

// addMul adds a*b, saturating at 2^128−1 (only reachable with prices far
// beyond MaxPriceFenPerKWh and absurd energies).
func (x *u128) addMul(a, b uint64) {
	hi, lo := bits.Mul64(a, b)
	var c uint64
	x.lo, c = bits.Add64(x.lo, lo, 0)
	x.hi, c = bits.Add64(x.hi, hi, c)
	if c != 0 {
		x.hi, x.lo = math.MaxUint64, math.MaxUint64
	}
}

// halfUpMilli returns x/1000 rounded half-up, saturating at MaxInt64.
func (x u128) halfUpMilli() int64 {
	lo, c := bits.Add64(x.lo, 500, 0)
	hi, c := bits.Add64(x.hi, 0, c)
	if c != 0 || hi >= 1000 {
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, 1000)
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(q)
}

// nonNeg clamps a price to ≥ 0 (Price never emits a negative line, even for
// a tariff that does not validate).
func nonNeg(f Fen) uint64 { return uint64(max(f, 0)) }

// Price bills a split. There are always two lines, LineEnergy then
// LineService, present even at zero (Pay Score post_payments lists both):
//
//	电费   = round_half_up( Σ_p Wh_p × energy_fen_per_kwh_p  / 1000 )
//	服务费 = round_half_up( Σ_p Wh_p × service_fen_per_kwh_p / 1000 )
//
// Each sum is exact (128-bit integers, no floats) and rounded half-up to the
// fen ONCE per line, not per period: docs/contract.md §2 rounds "once per line item",
// and per-period rounding would let the bill drift by up to half a fen per
// period per line against the price the user was shown. Each line's EnergyWh
// is the whole energy (both prices are per kWh of it). TotalFen is the sum of
// the lines.
//
// The cap: if capFen > 0 and the total exceeds it, the bill is capFen and
// Capped is true. Each line is scaled by capFen/total with largest-remainder
// rounding: floor(line×cap/total) each, and the at most one fen left goes to
// the line with the larger remainder (ties: 电费). So lines stay
// non-negative, never exceed their uncapped amount, and sum exactly to capFen.
// A total equal to the cap is not capped.
//
// Price is total: it never panics. Entries of s beyond the tariff's periods
// (or periods beyond s) are ignored, negative Wh and prices count as 0, and
// amounts beyond int64 saturate — none of which happens with a validated
// tariff and a Split from Add. One allocation (the lines).
func (t Tariff) Price(s Split, capFen Fen) Bill {
	var energyWh int64
	var eAcc, sAcc u128
	for i := range min(len(s), len(t.Periods)) {
		wh := s[i]
		if wh <= 0 {
			continue
		}
		if energyWh > math.MaxInt64-wh {
			energyWh = math.MaxInt64
		} else {
			energyWh += wh
		}
		p := &t.Periods[i]
		eAcc.addMul(uint64(wh), nonNeg(p.EnergyFenPerKWh))
		sAcc.addMul(uint64(wh), nonNeg(p.ServiceFenPerKWh))
	}
	e := eAcc.halfUpMilli()
	sv := sAcc.halfUpMilli()
	if sv > math.MaxInt64-e { // keep total == Σ lines even when saturated
		sv = math.MaxInt64 - e
	}
	total := e + sv
	capped := false
	if capFen > 0 && total > int64(capFen) {
		e, sv = scaleToCap(e, sv, int64(capFen))
		total = int64(capFen)
		capped = true
	}
	return Bill{
		EnergyWh: energyWh,
		Lines: []Line{
			{Name: LineEnergy, AmountFen: Fen(e), EnergyWh: energyWh},
			{Name: LineService, AmountFen: Fen(sv), EnergyWh: energyWh},
		},
		TotalFen: Fen(total),
		Capped:   capped,
	}
}

// scaleToCap scales the lines a, b (a+b > c > 0, a, b ≥ 0) so they sum to c:
// largest remainder, ties to a.
func scaleToCap(a, b, c int64) (int64, int64) {
	total := uint64(a) + uint64(b) // ≤ MaxInt64 by construction in Price
	hi, lo := bits.Mul64(uint64(a), uint64(c))
	qa, ra := bits.Div64(hi, lo, total) // qa < c, so hi < total
	hi, lo = bits.Mul64(uint64(b), uint64(c))
	qb, rb := bits.Div64(hi, lo, total)
	if uint64(c)-qa-qb > 0 { // at most 1: ra+rb is 0 or total
		if ra >= rb {
			qa++
		} else {
			qb++
		}
	}
	return int64(qa), int64(qb)
}

// MaxEnergyWh is how much energy capFen buys at the MOST expensive period
// (energy + service price), floored, so that a charger given this limit can
// never bring Price over the cap wherever in the day it charges.
//
// It is floor((1000×capFen − 1) / maxPrice), not floor(1000×capFen /
// maxPrice): each of the two lines rounds half-up, and two halves can add a
// whole fen (e.g. 12.5 + 7.5 fen bills 13 + 8 = 21 for 20.0 fen of energy).
// With W×maxPrice ≤ 1000×cap − 1, Σ Wh_p×price_p ≤ 1000×cap − 1 for any split
// of W, and round(x)+round(y) ≤ floor(x+y)+1 ≤ cap.
//
// capFen <= 0 → 0. A tariff where every period is free →
// NoPriceEnergyLimitWh. Saturates at MaxInt64.
func (t Tariff) MaxEnergyWh(capFen Fen) int64 {
	if capFen <= 0 {
		return 0
	}
	var price uint64 // fen per kWh; two clamped int64 fit a uint64
	for i := range t.Periods {
		p := &t.Periods[i]
		price = max(price, nonNeg(p.EnergyFenPerKWh)+nonNeg(p.ServiceFenPerKWh))
	}
	if price == 0 {
		return NoPriceEnergyLimitWh
	}
	hi, lo := bits.Mul64(uint64(capFen), 1000)
	lo, b := bits.Sub64(lo, 1, 0)
	hi -= b
	if hi >= price {
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, price)
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(q)
}

// DefaultTariff is the tariff of chargers registered without one: a
// realistic 尖峰平谷 (peak/high/flat/valley) day with a flat 0.40 yuan/kWh
// service fee.
//
//	00:00–08:00 谷 0.30   08:00–10:00 平 0.60   10:00–12:00 峰 1.00
//	12:00–14:00 平 0.60   14:00–17:00 峰 1.00   17:00–19:00 尖 1.20
//	19:00–21:00 峰 1.00   21:00–23:00 平 0.60   23:00–24:00 谷 0.30
func DefaultTariff() Tariff {
	const service = 40
	const valley, flat, high, peak = 30, 60, 100, 120
	p := func(from, to string, energy Fen) Period {
		return Period{From: from, To: to, EnergyFenPerKWh: energy, ServiceFenPerKWh: service}
	}
	return Tariff{ID: "default", Periods: []Period{
		p("00:00", "08:00", valley),
		p("08:00", "10:00", flat),
		p("10:00", "12:00", high),
		p("12:00", "14:00", flat),
		p("14:00", "17:00", high),
		p("17:00", "19:00", peak),
		p("19:00", "21:00", high),
		p("21:00", "23:00", flat),
		p("23:00", "24:00", valley),
	}}
}
