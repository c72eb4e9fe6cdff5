package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input makes Parse or Locate panic, and that whatever Parse
// accepts survives Marshal and Parse again (export, edit, apply).
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "groups[0].apis[0].backend.url")
	}
	f.Fuzz(func(t *testing.T, data []byte, path string) {
		Locate(data, path)
		b, err := Parse("f.yaml", data)
		if err != nil {
			return
		}
		out, err := Marshal(b)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if _, err := Parse("export.yaml", out); err != nil {
			t.Fatalf("re-parse of exported bundle: %v\n%s", err, out)
		}
	})
}
