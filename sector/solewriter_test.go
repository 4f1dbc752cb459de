package sector

import (
	"bytes"
	"os"
	"testing"
)

// TestSoleWriterRemembersSize: a File that is the sole writer of its
// backing file answers sizes and reads from the size it remembers (a
// change made behind it shows only after ForgetSize), and its own writes
// and truncations keep that size exact.
func TestSoleWriterRemembersSize(t *testing.T) {
	c := newTestCipher(t, fixedKey(3), 4096)
	f, path := tempBacking(t, 4096)
	f.SoleWriter()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1024) // 4 sectors
	mustWrite(t, f, c, data, 0)
	checkContent(t, f, c, data)

	// Through the File: every size change is seen at once.
	if err := f.Truncate(c, 5000); err != nil {
		t.Fatal(err)
	}
	checkContent(t, f, c, data[:5000])
	mustWrite(t, f, c, data[:100], 9000)
	want := append(append(append([]byte{}, data[:5000]...), make([]byte, 4000)...), data[:100]...)
	checkContent(t, f, c, want)
	if err := f.Truncate(c, 0); err != nil {
		t.Fatal(err)
	}
	checkContent(t, f, c, nil)
	mustWrite(t, f, c, data, 0)
	checkContent(t, f, c, data)

	// Behind the File: the remembered size answers until ForgetSize.
	other, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	st, err := other.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Truncate(st.Size() - int64(f.stored)); err != nil {
		t.Fatal(err)
	}
	if got, err := f.Size(); err != nil || got != int64(len(data)) {
		t.Fatalf("Size after a truncation behind the File = %d, %v; want the remembered %d", got, err, len(data))
	}
	f.ForgetSize()
	if got, err := f.Size(); err != nil || got != int64(len(data))-4096 {
		t.Fatalf("Size after ForgetSize = %d, %v; want %d", got, err, len(data)-4096)
	}
	checkContent(t, f, c, data[:len(data)-4096])
}
