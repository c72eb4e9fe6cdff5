package config

import "testing"

// TestQuickstartParses keeps the README's quickstart file valid.
func TestQuickstartParses(t *testing.T) {
	b, err := Load("../examples/quickstart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Groups) != 1 || len(b.Groups[0].APIs) != 3 || len(b.Apps) != 1 {
		t.Fatalf("quickstart parsed as %d groups, %d apps", len(b.Groups), len(b.Apps))
	}
}
