package ratelimit

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// A node's used nonces live in memory: a node that stops forgets them, and a request
// signed within the 15 minutes before it stopped could be sent again once it is back.
// Clustered, the node learns them again from the member it joins; alone, it has no one
// to ask. So a node saves its live nonces when it stops cleanly and loads them when it
// starts (node.Close, node.Start). A crash still forgets them.
//
// The file: nonceFileMagic, then per nonce its 16-byte digest and its expiry (unix
// seconds, 4 bytes little-endian), then the CRC-32 (IEEE) of everything before it.

var nonceFileMagic = []byte("TGNONCE1")

const nonceRecordLen = digestLen + 4

// SaveTo writes every live nonce to w and returns how many. Use no store while it
// runs (it locks each shard in turn).
func (s *NonceStore) SaveTo(w io.Writer) (int, error) {
	crc := crc32.NewIEEE()
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 64<<10)
	if _, err := bw.Write(nonceFileMagic); err != nil {
		return 0, err
	}
	nowSec := sec(s.cfg.Clock().UnixNano())
	var rec [nonceRecordLen]byte
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		s.lock(sh)
		var err error
		for _, e := range sh.t.slots {
			if e.exp <= nowSec {
				continue
			}
			copy(rec[:], e.d[:])
			binary.LittleEndian.PutUint32(rec[digestLen:], e.exp)
			if _, err = bw.Write(rec[:]); err != nil {
				break
			}
			n++
		}
		s.unlock(sh)
		if err != nil {
			return 0, err
		}
	}
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	_, err := w.Write(binary.LittleEndian.AppendUint32(nil, crc.Sum32()))
	return n, err
}

// LoadFrom remembers the nonces SaveTo wrote that have not expired yet, and returns
// how many. A file that is not whole (torn, truncated, not ours) loads nothing and
// says why.
func (s *NonceStore) LoadFrom(r io.Reader) (int, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return 0, err
	}
	body := len(b) - 4
	switch {
	case body < len(nonceFileMagic) || string(b[:len(nonceFileMagic)]) != string(nonceFileMagic):
		return 0, errors.New("not a saved nonce table")
	case (body-len(nonceFileMagic))%nonceRecordLen != 0:
		return 0, fmt.Errorf("saved nonce table of %d bytes: not whole records", len(b))
	case crc32.ChecksumIEEE(b[:body]) != binary.LittleEndian.Uint32(b[body:]):
		return 0, errors.New("saved nonce table fails its checksum")
	}
	now := s.cfg.Clock().UnixNano()
	nowSec := sec(now)
	n := 0
	for rec := b[len(nonceFileMagic):body]; len(rec) > 0; rec = rec[nonceRecordLen:] {
		exp := binary.LittleEndian.Uint32(rec[digestLen:])
		if exp <= nowSec {
			continue
		}
		// Kept until its own expiry, not a new TTL from now.
		s.remember(digest(rec[:digestLen]), int64(exp)*1e9, now)
		n++
	}
	return n, nil
}
