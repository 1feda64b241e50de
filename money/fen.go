// Package money holds chargeflow's money rules: amounts are int64 fen
// everywhere inside the program; yuan strings exist only at the Huifu
// boundary (ParseYuan / Fen.Yuan). No floats touch money.
package money

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Fen is an amount of money in fen (1 yuan = 100 fen).
type Fen int64

// ErrBadYuan is returned (wrapped) by ParseYuan for anything that is not a
// plain non-negative decimal yuan amount with at most two decimals.
var ErrBadYuan = errors.New("bad yuan amount")

// maxYuanDigits bounds the integer part so that the result fits an int64 of fen.
const maxYuanDigits = 16

// Yuan formats f as Huifu's yuan string with exactly two decimals ("12.30").
// Negative amounts keep their sign ("-0.05"); the wire never carries them.
func (f Fen) Yuan() string {
	sign := ""
	v := int64(f)
	if v < 0 {
		sign = "-"
		if v == -v { // math.MinInt64 has no positive counterpart
			return "-92233720368547758.08"
		}
		v = -v
	}
	return fmt.Sprintf("%s%d.%02d", sign, v/100, v%100)
}

// String is the yuan form, for logs and messages.
func (f Fen) String() string { return f.Yuan() }

// ParseYuan parses a yuan string as Huifu sends it: digits, optionally a dot
// and one or two decimals ("12", "12.3", "12.30"). Signs, exponents, spaces,
// thousands separators and a third decimal are refused: money that does not
// parse exactly is never guessed at.
func ParseYuan(s string) (Fen, error) {
	intPart, frac, hasDot := strings.Cut(s, ".")
	if intPart == "" || len(intPart) > maxYuanDigits || !allDigits(intPart) {
		return 0, fmt.Errorf("%w: %q", ErrBadYuan, s)
	}
	if hasDot && (len(frac) == 0 || len(frac) > 2 || !allDigits(frac)) {
		return 0, fmt.Errorf("%w: %q", ErrBadYuan, s)
	}
	for len(frac) < 2 {
		frac += "0"
	}
	y, err := strconv.ParseInt(intPart, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %q", ErrBadYuan, s)
	}
	f, _ := strconv.ParseInt(frac, 10, 64)
	return Fen(y*100 + f), nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
