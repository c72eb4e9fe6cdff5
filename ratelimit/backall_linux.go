package ratelimit

import (
	"errors"

	"golang.org/x/sys/unix"
)

// backAll has the kernel back every page of mem now, and map it into this process
// (MADV_POPULATE_WRITE). Backed lazily, each page of the table cost two faults under
// load, one to allocate it and one in every other process mapping it, at random as
// nonces landed (2% of a worker's CPU in its first ten seconds of signed calls), and
// a page the host could not back (a full tmpfs) was a SIGBUS in the middle of a call;
// now it is an error at start (and a memory limit's OOM kill comes at start too). A
// kernel older than 5.14 knows no such advice: the table is then backed as it is
// used.
func backAll(mem []byte) error {
	const chunk = 16 << 20 // the mapping's lock is not held across the whole table
	for off := 0; off < len(mem); off += chunk {
		part := mem[off:min(off+chunk, len(mem))]
		for {
			err := unix.Madvise(part, unix.MADV_POPULATE_WRITE)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EINVAL) && off == 0 {
				return nil // no MADV_POPULATE_WRITE here
			}
			if err != nil {
				return err
			}
			break
		}
	}
	return nil
}
