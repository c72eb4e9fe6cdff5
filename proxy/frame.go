package proxy

import "bytes"

// Framing for the event loop: whether a request or a backend's answer it has read is
// whole, so that fasthttp's parsers are only given whole ones. fasthttp parses the
// header block (found by its CRLFCRLF) and says how the body is framed; the loop
// checks that the body is all there (frameChunks for a chunked answer). What the loop
// does not frame itself (chunked or expected request bodies, answers read to the
// connection's close, 1xx, bare-LF line ends) is frameOther: it goes to the
// goroutine path, whose parser reads it as it comes.
const (
	frameMore  = iota // not whole yet
	frameWhole        // whole: its length is returned
	frameOther        // not one the loop frames
)

var (
	crlf     = []byte("\r\n")
	crlfCrlf = []byte("\r\n\r\n")
	lfLf     = []byte("\n\n")
)

// headerEnd returns the length of the header block at the head of b (CRLFCRLF
// included), or the verdict without one: more bytes may end it within max, or not
// (bare-LF line ends, or too long).
func headerEnd(b []byte, max int) (int, int) {
	end := bytes.Index(b, crlfCrlf)
	switch {
	case end >= 0 && end+4 <= max:
		return end + 4, frameWhole
	case end >= 0 || len(b) >= max || bytes.Contains(b, lfLf):
		return 0, frameOther
	}
	return 0, frameMore
}

// frameChunks frames a chunked body, trailers included.
func frameChunks(b []byte) (int, int) {
	pos := 0
	for {
		i := bytes.Index(b[pos:], crlf)
		if i < 0 {
			return 0, frameMore
		}
		line := b[pos : pos+i]
		if bytes.IndexByte(line, '\n') >= 0 {
			return 0, frameOther // a bare LF: fasthttp would end the line there
		}
		if j := bytes.IndexByte(line, ';'); j >= 0 {
			line = line[:j]
		}
		line = bytes.TrimRight(line, " \t")
		if len(line) == 0 || len(line) > 12 {
			return 0, frameOther
		}
		size := 0
		for _, d := range line {
			switch {
			case d >= '0' && d <= '9':
				size = size<<4 | int(d-'0')
			case d >= 'a' && d <= 'f':
				size = size<<4 | int(d-'a'+10)
			case d >= 'A' && d <= 'F':
				size = size<<4 | int(d-'A'+10)
			default:
				return 0, frameOther
			}
		}
		pos += i + 2
		if size == 0 {
			for { // trailers, up to the empty line
				j := bytes.Index(b[pos:], crlf)
				if j < 0 {
					return 0, frameMore
				}
				if bytes.IndexByte(b[pos:pos+j], '\n') >= 0 {
					return 0, frameOther
				}
				pos += j + 2
				if j == 0 {
					return pos, frameWhole
				}
			}
		}
		if len(b) < pos+size+2 {
			return 0, frameMore
		}
		if b[pos+size] != '\r' || b[pos+size+1] != '\n' {
			return 0, frameOther
		}
		pos += size + 2
	}
}
