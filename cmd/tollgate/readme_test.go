package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/proxy"
)

// TestREADMEErrorTable keeps the README's error table equal to the one in the code.
func TestREADMEErrorTable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, line := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(line, "| ") && strings.Count(line, "`") == 2 && strings.Contains(line, " | `") {
			rows = append(rows, line)
		}
	}
	var want []string
	for _, e := range proxy.Errors() {
		want = append(want, fmt.Sprintf("| %d | `%s` | %s | %s |", e.Status, e.Code, e.Message, e.Use))
	}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Fatalf("README error table differs from proxy.Errors(); regenerate it. Want:\n%s", strings.Join(want, "\n"))
	}
}
