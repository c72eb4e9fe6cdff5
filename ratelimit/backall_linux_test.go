package ratelimit

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A shared table is backed and mapped whole when a store opens it, in the process
// that creates it and in every one that maps it after: no page faults in the middle
// of calls, and no SIGBUS there when memory runs out.
func TestSharedNonceFileIsBackedWhenOpened(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nonces")
	a := sharedStore(t, path, 200_000)
	b := sharedStore(t, path, 200_000)
	for name, s := range map[string]*NonceStore{"creator": a, "second mapping": b} {
		present, total := presentPages(t, s.shm.mem)
		if total < 1000 {
			t.Fatalf("%s: the table spans %d pages, too few to tell", name, total)
		}
		if present != total {
			t.Errorf("%s: %d of the table's %d pages mapped before any nonce was used, want all", name, present, total)
		}
	}
}

// A mapping the kernel cannot back (here, past the end of its file) is an error that
// says so, not a SIGBUS at the first nonce that lands there.
func TestBackAllNamesAMappingItCannotBack(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "short"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, 64<<10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	if err := backAll(mem); err == nil {
		t.Fatal("backAll of a mapping 60 KiB past its file's end: no error")
	}
}

// presentPages counts the pages of mem mapped in this process (/proc/self/pagemap's
// present bit, readable without privilege).
func presentPages(t *testing.T, mem []byte) (present, total int) {
	t.Helper()
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Skipf("no pagemap: %v", err)
	}
	defer pm.Close()
	page := os.Getpagesize()
	start := uintptr(unsafe.Pointer(&mem[0])) / uintptr(page)
	total = (len(mem) + page - 1) / page
	buf := make([]byte, 8*total)
	if _, err := pm.ReadAt(buf, int64(start)*8); err != nil {
		t.Fatalf("pagemap: %v", err)
	}
	for i := range total {
		if binary.LittleEndian.Uint64(buf[8*i:])&(1<<63) != 0 {
			present++
		}
	}
	return present, total
}
