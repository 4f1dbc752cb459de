package volume

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/encvol/encvol/keywrap"
)

func testMarker() *Marker {
	return &Marker{Operation: OpImport, Source: "/srv/plain/data", SourceID: "dev 8:1 inode 42", KMS: "local",
		Key: "alias/data", SectorSize: 4096, NameMode: NameModeEncrypted, Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func TestMarkerRoundTrip(t *testing.T) {
	m := testMarker()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := "encvol-incomplete v1\n" +
		`{"operation":"import","source":"/srv/plain/data","source_id":"dev 8:1 inode 42","kms":"local","key":"alias/data","sector_size":4096,"name_mode":"encrypted","started":"2026-01-02T03:04:05Z"}` + "\n"
	if string(b) != want {
		t.Fatalf("encoded\n%s\nwant\n%s", b, want)
	}
	got, err := ParseMarker(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("parsed %+v, want %+v", got, m)
	}
}

func TestMarkerParseRefuses(t *testing.T) {
	good, err := testMarker().Encode()
	if err != nil {
		t.Fatal(err)
	}
	body := strings.SplitN(string(good), "\n", 2)[1]
	for name, tc := range map[string]struct{ in, want string }{
		"empty":         {"", "does not start"},
		"no newline":    {"encvol-incomplete v1", "does not start"},
		"other magic":   {"encvol-volume v1\n" + body, "does not start"},
		"newer version": {"encvol-incomplete v2\n" + body, "another encvol version"},
		"one line":      {"encvol-incomplete v1\n" + strings.TrimSuffix(body, "\n"), "exactly two lines"},
		"three lines":   {string(good) + "x\n", "exactly two lines"},
		"not json":      {"encvol-incomplete v1\n{\n", "marker body"},
		"unknown field": {"encvol-incomplete v1\n" + strings.Replace(body, `{"operation"`, `{"extra":1,"operation"`, 1), "unknown field"},
		"trailing":      {"encvol-incomplete v1\n" + strings.TrimSuffix(body, "\n") + "{}\n", "after the JSON"},
		"operation":     {strings.Replace(string(good), `"import"`, `"move"`, 1), "unknown operation"},
		"relative":      {strings.Replace(string(good), `"/srv/plain/data"`, `"plain/data"`, 1), "not an absolute path"},
		"sector size":   {strings.Replace(string(good), `4096`, `1000`, 1), "sector_size"},
		"name mode":     {strings.Replace(string(good), `"encrypted"`, `"hidden"`, 1), "name_mode"},
		"offset time":   {strings.Replace(string(good), `05Z`, `05+01:00`, 1), "UTC"},
		"fraction":      {strings.Replace(string(good), `05Z`, `05.5Z`, 1), "whole seconds"},
		"no kms":        {strings.Replace(string(good), `"kms":"local"`, `"kms":""`, 1), "must not be empty"},
		"newline":       {strings.Replace(string(good), `alias/data`, `alias/da\nta`, 1), "newline"},
		"too large":     {string(good) + strings.Repeat("x", maxMarkerSize), "larger than"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseMarker([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseMarker: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestMarkerSameJob(t *testing.T) {
	a := testMarker()
	same := *a
	same.Started = a.Started.Add(time.Hour) // a rerun starts later: still the same job
	if err := a.sameJob(&same); err != nil {
		t.Fatalf("same job refused: %v", err)
	}
	for name, change := range map[string]func(m *Marker){
		"operation": func(m *Marker) { m.Operation = OpCopy },
		"source":    func(m *Marker) { m.Source = "/srv/other" },
		"source id": func(m *Marker) { m.SourceID = "dev 8:1 inode 43" },
		"kms":       func(m *Marker) { m.KMS = "corp" },
		"key":       func(m *Marker) { m.Key = "" },
		"sector":    func(m *Marker) { m.SectorSize = 512 },
		"names":     func(m *Marker) { m.NameMode = NameModePlaintext },
	} {
		other := *a
		change(&other)
		if err := a.sameJob(&other); err == nil {
			t.Errorf("%s changed: accepted as the same job", name)
		}
	}
}

// TestCheckComplete: a volume with the marker is refused naming --resume
// and the command that finishes it; an unreadable marker is refused too.
func TestCheckComplete(t *testing.T) {
	dir := t.TempDir()
	if err := CheckComplete(dir); err != nil {
		t.Fatalf("no marker: %v", err)
	}
	if err := writeMarker(dir, testMarker()); err != nil {
		t.Fatal(err)
	}
	err := CheckComplete(dir)
	var ie *IncompleteError
	if !errors.As(err, &ie) || !errors.Is(err, ErrIncomplete) || ie.Marker == nil {
		t.Fatalf("marker present: %v", err)
	}
	for _, want := range []string{"unfinished import of /srv/plain/data", "--resume", "encvol import /srv/plain/data --backing " + dir + " --kms local --key alias/data --resume"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, keywrap.IncompleteFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckComplete(dir); !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("unreadable marker: %v", err)
	}
}

// FuzzParseMarker: any input is refused or parsed; what parses encodes to
// bytes that parse to the same marker.
func FuzzParseMarker(f *testing.F) {
	good, err := testMarker().Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("encvol-incomplete v1\n{}\n"))
	f.Add([]byte("encvol-incomplete v2\n{}\n"))
	f.Add([]byte(strings.Replace(string(good), "import", "copy", 1)))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMarker(b)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		enc, err := m.Encode()
		if err != nil {
			t.Fatalf("parsed marker does not encode: %v", err)
		}
		again, err := ParseMarker(enc)
		if err != nil {
			t.Fatalf("encoded marker does not parse: %v\n%s", err, enc)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip changed the marker: %+v != %+v", again, m)
		}
	})
}

// TestMarkerFormatDoc: the marker shown in docs/format.md is one this code
// reads, so the document and the code cannot drift apart.
func TestMarkerFormatDoc(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "format.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "\n"+markerMagic+"1\n")
	if !ok {
		t.Fatal("docs/format.md shows no marker")
	}
	body, _, _ := strings.Cut(rest, "\n")
	m, err := ParseMarker([]byte(markerMagic + "1\n" + body + "\n"))
	if err != nil {
		t.Fatalf("the marker in docs/format.md does not parse: %v", err)
	}
	if !reflect.DeepEqual(m, testMarker()) {
		t.Errorf("the marker in docs/format.md is %+v, the tests' is %+v", m, testMarker())
	}
}
