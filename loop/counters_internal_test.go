package loop

import (
	"strings"
	"testing"
)

// Every reason is a metric label: the init check (counters.go) must pass
// for the reasons the package has, and must catch a reason added without a
// name or with another reason's name.
func TestReasonNames(t *testing.T) {
	if err := checkReasonNames(); err != nil {
		t.Fatal(err)
	}
	for r := DropReason(0); r < numDropReasons; r++ {
		if r.String() == "" {
			t.Fatalf("DropReason %d has no name", r)
		}
	}
	for r := CloseReason(0); r < numCloseReasons; r++ {
		if r.String() == "" {
			t.Fatalf("CloseReason %d has no name", r)
		}
	}
	for r := RejectReason(0); r < numRejectReasons; r++ {
		if r.String() == "" {
			t.Fatalf("RejectReason %d has no name", r)
		}
	}

	// A reason appended to the const block but not to its names array
	// leaves the last entry empty.
	var missing [numDropReasons + 1]string
	copy(missing[:], dropReasonNames[:])
	err := checkNames("DropReason", missing[:])
	if err == nil || !strings.Contains(err.Error(), "no metric name") {
		t.Fatalf("a missing name: %v", err)
	}
	dup := append(append([]string(nil), closeReasonNames[:]...), closeReasonNames[0])
	err = checkNames("CloseReason", dup)
	if err == nil || !strings.Contains(err.Error(), "share the metric name") {
		t.Fatalf("a duplicate name: %v", err)
	}
}
