package money

import (
	"fmt"
	"math/big"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// genTariff draws a valid tariff: 1..48 periods at random minute cuts, in a
// random order, with prices across the whole accepted range.
func genTariff() *rapid.Generator[Tariff] {
	return rapid.Custom(func(t *rapid.T) Tariff {
		n := rapid.IntRange(1, MaxPeriods).Draw(t, "periods")
		cuts := rapid.SliceOfNDistinct(rapid.Int32Range(1, minutesPerDay-1), n-1, n-1, rapid.ID[int32]).Draw(t, "cuts")
		slices.Sort(cuts)
		cuts = append(append([]int32{0}, cuts...), minutesPerDay)
		toFen := func(v int64) Fen { return Fen(v) }
		// Zero, realistic, and anything up to the bound.
		price := rapid.OneOf(rapid.Just(Fen(0)), rapid.Map(rapid.Int64Range(0, 200), toFen),
			rapid.Map(rapid.Int64Range(0, int64(MaxPriceFenPerKWh)), toFen))
		var tr Tariff
		for i := 0; i < n; i++ {
			tr.Periods = append(tr.Periods, Period{
				From:             fmt.Sprintf("%02d:%02d", cuts[i]/60, cuts[i]%60),
				To:               fmt.Sprintf("%02d:%02d", cuts[i+1]/60, cuts[i+1]%60),
				EnergyFenPerKWh:  price.Draw(t, "energy"),
				ServiceFenPerKWh: price.Draw(t, "service"),
			})
		}
		tr.Periods = rapid.Permutation(tr.Periods).Draw(t, "order")
		return tr
	})
}

// genInstant draws an instant between 2000 and 2100, in a random zone.
func genInstant(t *rapid.T, label string) time.Time {
	sec := rapid.Int64Range(946684800, 4102444800).Draw(t, label+"_sec")
	ns := rapid.Int64Range(0, 999_999_999).Draw(t, label+"_ns")
	zone := rapid.IntRange(-12, 14).Draw(t, label+"_zone")
	return time.Unix(sec, ns).In(time.FixedZone("Z", zone*3600))
}

// genStep draws the time between two samples: mostly seconds, sometimes
// hours or days, sometimes backwards (a charger clock jump).
func genStep(t *rapid.T, label string) time.Duration {
	return time.Duration(rapid.OneOf(
		rapid.Int64Range(0, int64(60*time.Second)),
		rapid.Int64Range(0, int64(6*time.Hour)),
		rapid.Int64Range(0, int64(5*24*time.Hour)),
		rapid.Int64Range(-int64(time.Minute), 0),
	).Draw(t, label))
}

// exactShares is an independent oracle: it walks [from, to) boundary by
// boundary in Beijing wall-clock time and returns each period's exact share
// of e Wh.
func exactShares(tr Tariff, from, to time.Time, e int64) []*big.Rat {
	var bounds []int // minutes of the day where some period starts
	for _, p := range tr.Periods {
		m, _ := parseHHMM(p.From, false)
		bounds = append(bounds, int(m))
	}
	slices.Sort(bounds)
	ns := make([]int64, len(tr.Periods))
	total := to.Sub(from)
	for cur := from.In(Beijing); cur.Before(to); {
		midnight := time.Date(cur.Year(), cur.Month(), cur.Day(), 0, 0, 0, 0, Beijing)
		next := midnight.AddDate(0, 0, 1)
		for _, b := range bounds {
			if at := midnight.Add(time.Duration(b) * time.Minute); at.After(cur) {
				next = at
				break
			}
		}
		if next.After(to) {
			next = to
		}
		ns[tr.PeriodAt(cur)] += int64(next.Sub(cur))
		cur = next
	}
	out := make([]*big.Rat, len(ns))
	for i, w := range ns {
		out[i] = bigShare(e, w, int64(total))
	}
	return out
}

func TestPropValidGenerated(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tr := genTariff().Draw(t, "tariff")
		if err := tr.Validate(); err != nil {
			t.Fatalf("generated tariff does not validate: %v", err)
		}
		// Moving one boundary of one period by a minute breaks coverage.
		i := rapid.IntRange(0, len(tr.Periods)-1).Draw(t, "broken")
		p := &tr.Periods[i]
		if m, _ := parseHHMM(p.To, true); m > 1 {
			p.To = fmt.Sprintf("%02d:%02d", (m-1)/60, (m-1)%60)
			if err := tr.Validate(); err == nil {
				t.Fatalf("moving periods[%d].to back a minute still validates", i)
			}
		}
	})
}

// TestPropAddSequence: for any monotone register sequence, Σ Split ==
// last − first, every part is non-negative, and each Add's parts are within
// 1 Wh of the exact proportional shares (floor or floor+1 of each).
func TestPropAddSequence(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tr := genTariff().Draw(t, "tariff")
		at := genInstant(t, "t0")
		reg := rapid.Int64Range(0, 1<<40).Draw(t, "reg0")
		first := reg
		var s Split
		steps := rapid.IntRange(1, 12).Draw(t, "steps")
		for k := 0; k < steps; k++ {
			next := at.Add(genStep(t, "dt"))
			nreg := reg + rapid.Int64Range(0, 1_000_000).Draw(t, "dwh")
			ns, err := tr.Add(s, at, reg, next, nreg)
			if err != nil {
				t.Fatalf("Add: %v", err)
			}
			if next.After(at) {
				exact := exactShares(tr, at, next, nreg-reg)
				// Largest remainder: every part is the floor of its exact
				// share or one more, and a period that got the extra Wh has
				// a remainder at least as large as any that did not.
				minUp, maxDown := big.NewRat(2, 1), big.NewRat(0, 1)
				for i := range ns {
					part := ns[i] - valueAt(s, i)
					fl := new(big.Int).Quo(exact[i].Num(), exact[i].Denom()) // shares ≥ 0: Quo floors
					frac := new(big.Rat).Sub(exact[i], new(big.Rat).SetInt(fl))
					switch part - fl.Int64() {
					case 0:
						if frac.Cmp(maxDown) > 0 {
							maxDown = frac
						}
					case 1:
						if frac.Sign() == 0 {
							t.Fatalf("period %d got an extra Wh on an exact share %s", i, exact[i].RatString())
						}
						if frac.Cmp(minUp) < 0 {
							minUp = frac
						}
					default:
						t.Fatalf("period %d got %d Wh, exact share %s", i, part, exact[i].FloatString(3))
					}
				}
				if maxDown.Cmp(minUp) > 0 {
					t.Fatalf("a remainder of %s got the extra Wh while %s did not", minUp.FloatString(4), maxDown.FloatString(4))
				}
			} else if p := tr.PeriodAt(next); ns[p]-valueAt(s, p) != nreg-reg {
				t.Fatalf("to <= from: period %d got %d, want all %d", p, ns[p]-valueAt(s, p), nreg-reg)
			}
			s, at, reg = ns, next, nreg
		}
		if len(s) != len(tr.Periods) || s.Total() != reg-first {
			t.Fatalf("Σ split %v = %d, want %d", s, s.Total(), reg-first)
		}
		for i, v := range s {
			if v < 0 {
				t.Fatalf("period %d negative: %d", i, v)
			}
		}
	})
}

func valueAt(s Split, i int) int64 {
	if s == nil {
		return 0
	}
	return s[i]
}

// TestPropAddIntermediateSample: splitting [t0, t2) at any intermediate
// sample (t1, r1) gives the same TOTAL exactly, whatever r1 is. Per period
// the results may differ, even a lot, when r1 says power was not constant
// (that is information the single interval did not have). When r1 is exactly
// the constant-power register, each of the three Adds is within 1 Wh of the
// same exact shares, so per period the two results differ by at most 2 Wh.
func TestPropAddIntermediateSample(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tr := genTariff().Draw(t, "tariff")
		t0 := genInstant(t, "t0")
		secs := rapid.Int64Range(1, 4*24*3600).Draw(t, "secs")
		mid := rapid.Int64Range(0, secs).Draw(t, "mid")
		whPerSec := rapid.Int64Range(0, 1000).Draw(t, "wh_per_sec")
		r0 := rapid.Int64Range(0, 1<<40).Draw(t, "r0")
		t1, t2 := t0.Add(time.Duration(mid)*time.Second), t0.Add(time.Duration(secs)*time.Second)
		r2 := r0 + whPerSec*secs

		whole, err := tr.Add(nil, t0, r0, t2, r2)
		if err != nil {
			t.Fatal(err)
		}
		// Any intermediate register: the total is the same.
		r1 := rapid.Int64Range(r0, r2).Draw(t, "r1")
		a, _ := tr.Add(nil, t0, r0, t1, r1)
		b, _ := tr.Add(a, t1, r1, t2, r2)
		if b.Total() != whole.Total() || b.Total() != r2-r0 {
			t.Fatalf("totals: split %d, whole %d, delta %d", b.Total(), whole.Total(), r2-r0)
		}
		// The constant-power register: per period within ±2 Wh.
		r1 = r0 + whPerSec*mid
		a, _ = tr.Add(nil, t0, r0, t1, r1)
		b, _ = tr.Add(a, t1, r1, t2, r2)
		for i := range whole {
			if d := b[i] - whole[i]; d < -2 || d > 2 {
				t.Fatalf("period %d: split %d, whole %d", i, b[i], whole[i])
			}
		}
	})
}

// priceOracle is Price without a cap, in math/big.
func priceOracle(tr Tariff, s Split) (energy, service Fen) {
	ne, ns := new(big.Int), new(big.Int)
	for i, wh := range s {
		ne.Add(ne, new(big.Int).Mul(big.NewInt(wh), big.NewInt(int64(tr.Periods[i].EnergyFenPerKWh))))
		ns.Add(ns, new(big.Int).Mul(big.NewInt(wh), big.NewInt(int64(tr.Periods[i].ServiceFenPerKWh))))
	}
	half := func(n *big.Int) Fen {
		return Fen(new(big.Int).Div(n.Add(n, big.NewInt(500)), big.NewInt(1000)).Int64())
	}
	return half(ne), half(ns)
}

func checkBill(t interface{ Fatalf(string, ...any) }, b Bill, capFen Fen) {
	if len(b.Lines) != 2 || b.Lines[0].Name != LineEnergy || b.Lines[1].Name != LineService {
		t.Fatalf("lines %+v", b.Lines)
	}
	if b.Lines[0].AmountFen < 0 || b.Lines[1].AmountFen < 0 {
		t.Fatalf("negative line: %+v", b)
	}
	if b.Lines[0].AmountFen+b.Lines[1].AmountFen != b.TotalFen {
		t.Fatalf("total %d != Σ lines %+v", b.TotalFen, b.Lines)
	}
	if capFen > 0 && b.TotalFen > capFen {
		t.Fatalf("total %d over cap %d", b.TotalFen, capFen)
	}
	if b.Capped && b.TotalFen != capFen {
		t.Fatalf("capped bill %d != cap %d", b.TotalFen, capFen)
	}
}

// TestPropPrice: lines equal the exact half-up oracle; total == Σ lines;
// lines ≥ 0; total ≤ cap when cap > 0; a capped bill is exactly the cap, each
// line at most its uncapped amount and within 1 fen of its exact scaled value.
func TestPropPrice(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tr := genTariff().Draw(t, "tariff")
		s := rapid.SliceOfN(rapid.OneOf(rapid.Int64Range(0, 2000), rapid.Int64Range(0, 1_000_000_000)), len(tr.Periods), len(tr.Periods)).Draw(t, "split")
		capFen := Fen(rapid.Int64Range(-1, 1<<40).Draw(t, "cap"))
		e, sv := priceOracle(tr, s)
		b := tr.Price(s, capFen)
		checkBill(t, b, capFen)
		if b.EnergyWh != Split(s).Total() || b.Lines[0].EnergyWh != b.EnergyWh || b.Lines[1].EnergyWh != b.EnergyWh {
			t.Fatalf("energy: %+v, Σ %d", b, Split(s).Total())
		}
		if !b.Capped {
			if b.Lines[0].AmountFen != e || b.Lines[1].AmountFen != sv {
				t.Fatalf("lines %+v, oracle %d + %d", b.Lines, e, sv)
			}
			if capFen > 0 && e+sv > capFen {
				t.Fatal("over the cap but not capped")
			}
			return
		}
		if capFen <= 0 || e+sv <= capFen {
			t.Fatalf("capped with cap %d, total %d", capFen, e+sv)
		}
		for i, orig := range []Fen{e, sv} {
			got := b.Lines[i].AmountFen
			exact := new(big.Rat).SetFrac(new(big.Int).Mul(big.NewInt(int64(orig)), big.NewInt(int64(capFen))), big.NewInt(int64(e+sv)))
			diff := new(big.Rat).Sub(big.NewRat(int64(got), 1), exact)
			if got > orig || diff.Cmp(big.NewRat(-1, 1)) <= 0 || diff.Cmp(big.NewRat(1, 1)) >= 0 {
				t.Fatalf("line %d: %d from %d, exact scaled %s", i, got, orig, exact.FloatString(3))
			}
		}
	})
}

// TestPropMaxEnergyWh: any split of MaxEnergyWh(cap) prices at or under the
// cap without the cap's help, and MaxEnergyWh is the largest W with
// W × max price ≤ 1000 × cap − 1.
func TestPropMaxEnergyWh(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tr := genTariff().Draw(t, "tariff")
		capFen := Fen(rapid.OneOf(rapid.Int64Range(1, 100), rapid.Int64Range(1, 10_000_000)).Draw(t, "cap"))
		w := tr.MaxEnergyWh(capFen)
		var maxPrice, top int64
		for i, p := range tr.Periods {
			if v := int64(p.EnergyFenPerKWh + p.ServiceFenPerKWh); v > maxPrice {
				maxPrice, top = v, int64(i)
			}
		}
		if maxPrice == 0 {
			if w != NoPriceEnergyLimitWh {
				t.Fatalf("free tariff: %d", w)
			}
			return
		}
		if w < 0 || w*maxPrice > 1000*int64(capFen)-1 || (w+1)*maxPrice <= 1000*int64(capFen)-1 {
			t.Fatalf("MaxEnergyWh(%d) = %d at %d fen/kWh", capFen, w, maxPrice)
		}
		n := len(tr.Periods)
		cuts := rapid.SliceOfN(rapid.Int64Range(0, w), n-1, n-1).Draw(t, "cuts")
		slices.Sort(cuts)
		cuts = append(append([]int64{0}, cuts...), w)
		s := make(Split, n)
		for i := range s {
			s[i] = cuts[i+1] - cuts[i]
		}
		for _, split := range []Split{s, func() Split { all := make(Split, n); all[top] = w; return all }()} {
			if b := tr.Price(split, 0); b.TotalFen > capFen {
				t.Fatalf("%d Wh split %v bills %d > cap %d", w, split, b.TotalFen, capFen)
			}
			if b := tr.Price(split, capFen); b.Capped {
				t.Fatalf("capped at MaxEnergyWh: %+v", b)
			}
		}
	})
}
