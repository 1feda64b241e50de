package money_test

import (
	"fmt"
	"time"

	"github.com/chargeflow/chargeflow/money"
)

// A session on the default tariff from 07:30 to 08:30 Beijing time, reported
// in UTC by the charger: 7 kWh straddling the 谷/平 boundary at 08:00.
func ExampleTariff_Price() {
	t := money.DefaultTariff()
	start := time.Date(2026, 11, 25, 23, 30, 0, 0, time.UTC) // 07:30 Beijing
	mid := start.Add(30 * time.Minute)                       // 08:00 Beijing
	end := start.Add(60 * time.Minute)                       // 08:30 Beijing

	var s money.Split
	s, _ = t.Add(s, start, 120_000, mid, 123_500)
	s, _ = t.Add(s, mid, 123_500, end, 127_000)

	bill := t.Price(s, 0)
	for _, l := range bill.Lines {
		fmt.Printf("%s %s yuan (%d Wh)\n", l.Name, l.AmountFen.Yuan(), l.EnergyWh)
	}
	fmt.Println("total", bill.TotalFen.Yuan(), "capped", bill.Capped)

	capped := t.Price(s, 500)
	fmt.Println("with a 5.00 cap:", capped.Lines[0].AmountFen.Yuan(), "+", capped.Lines[1].AmountFen.Yuan(), "=", capped.TotalFen.Yuan(), "capped", capped.Capped)
	fmt.Println("a 5.00 cap lets the charger deliver", t.MaxEnergyWh(500), "Wh")
	// Output:
	// 电费 3.15 yuan (7000 Wh)
	// 服务费 2.80 yuan (7000 Wh)
	// total 5.95 capped false
	// with a 5.00 cap: 2.65 + 2.35 = 5.00 capped true
	// a 5.00 cap lets the charger deliver 3124 Wh
}
