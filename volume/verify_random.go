package volume

// Randomness statistics of the backing sector payload: byte frequencies
// (chi-square), and how well it compresses.

import (
	"compress/flate"
	"math"
)

// histogram accumulates byte statistics over sector payloads.
type histogram struct {
	counts  [256]uint64
	n       int64
	sample  []byte
	sectors int64
	holes   int64
	files   int
}

func (h *histogram) addRecord(rec []byte) {
	if isZero(rec) {
		h.holes++
		return
	}
	h.sectors++
	for _, b := range rec {
		h.counts[b]++
	}
	h.n += int64(len(rec))
	if room := compressSample - len(h.sample); room > 0 {
		h.sample = append(h.sample, rec[:min(room, len(rec))]...)
	}
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func (h *histogram) report() RandomnessReport {
	r := RandomnessReport{Files: h.files, Sectors: h.sectors, HoleSectors: h.holes, Bytes: h.n, DegreesOfFreedom: 255}
	if h.n == 0 {
		return r
	}
	exp := float64(h.n) / 256
	var chi, ent float64
	for _, c := range h.counts {
		d := float64(c) - exp
		chi += d * d / exp
		if c > 0 {
			p := float64(c) / float64(h.n)
			ent -= p * math.Log2(p)
		}
	}
	r.ChiSquare = chi
	r.PValue = chiSquarePValue(chi, 255)
	r.Entropy = ent
	r.CompressRatio, r.CompressSample = compressRatio(h.sample), int64(len(h.sample))
	return r
}

// compressRatio is deflate's output size over its input size: ciphertext
// does not compress (ratio just above 1), text and structure do.
func compressRatio(b []byte) float64 {
	if len(b) == 0 {
		return 0
	}
	var cw countWriter
	w, _ := flate.NewWriter(&cw, flate.BestSpeed) // only fails for a bad level
	_, _ = w.Write(b)
	_ = w.Close()
	return float64(cw) / float64(len(b))
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// chiSquarePValue is P(X >= chi) for a chi-square distribution with df
// degrees of freedom: the regularized upper incomplete gamma Q(df/2, chi/2).
func chiSquarePValue(chi float64, df int) float64 {
	return gammaQ(float64(df)/2, chi/2)
}

// gammaQ is the regularized upper incomplete gamma function, by the series
// for x < a+1 and the continued fraction (modified Lentz) otherwise.
func gammaQ(a, x float64) float64 {
	if x <= 0 {
		return 1
	}
	lg, _ := math.Lgamma(a)
	if x < a+1 {
		sum, term := 1/a, 1/a
		for n := 1; n < 10000; n++ {
			term *= x / (a + float64(n))
			sum += term
			if math.Abs(term) < math.Abs(sum)*1e-15 {
				break
			}
		}
		return 1 - sum*math.Exp(-x+a*math.Log(x)-lg)
	}
	const tiny = 1e-300
	b := x + 1 - a
	c := 1 / tiny
	d := 1 / b
	f := d
	for i := 1; i < 10000; i++ {
		an := -float64(i) * (float64(i) - a)
		b += 2
		d = an*d + b
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = b + an/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		delta := d * c
		f *= delta
		if math.Abs(delta-1) < 1e-15 {
			break
		}
	}
	return math.Exp(-x+a*math.Log(x)-lg) * f
}
