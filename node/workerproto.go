package node

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// The control process and each worker talk over a Unix socket pair in frames: a type
// byte, a 4-byte little-endian length, the payload.
const (
	frameHello  byte = 'H' // control → worker: workerHello, JSON; the first frame
	frameState  byte = 'S' // control → worker: a state to serve, as an FSM snapshot
	frameReady  byte = 'R' // control → worker: 1 ready, 0 not (draining or not caught up)
	frameGather byte = 'G' // control → worker: send your metrics
	frameDrain  byte = 'D' // control → worker: finish in-flight requests and exit; payload: ms to wait
	frameServed byte = 's' // worker → control: uint64 state index now served
	frameMetric byte = 'm' // worker → control: metric families, protobuf-delimited
)

// maxFrame bounds a frame: a state snapshot of 10,000 APIs is a few MB.
const maxFrame = 1 << 30

// frameConn reads and writes frames on one connection; writes may come from several
// goroutines.
type frameConn struct {
	r   *bufio.Reader
	wmu sync.Mutex
	w   io.Writer
}

func newFrameConn(rw io.ReadWriter) *frameConn {
	return &frameConn{r: bufio.NewReaderSize(rw, 64<<10), w: rw}
}

func (c *frameConn) write(typ byte, payload []byte) error {
	var hdr [5]byte
	hdr[0] = typ
	binary.LittleEndian.PutUint32(hdr[1:], uint32(len(payload)))
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := c.w.Write(payload)
	return err
}

func (c *frameConn) read() (typ byte, payload []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.r, payload); err != nil {
		return 0, nil, err
	}
	return hdr[0], payload, nil
}

// workerHello is what a worker needs to know that is not in the replicated state.
type workerHello struct {
	NodeID              string   `json:"node_id"`
	Index               int      `json:"index"`   // the worker's slot, 0 … Workers-1
	Workers             int      `json:"workers"` // how many the node runs
	BaseDomain          string   `json:"base_domain"`
	MaxBodySize         int      `json:"max_body_size"`
	NonceCapacity       int      `json:"nonce_capacity"`
	SubdomainDailyLimit int64    `json:"subdomain_daily_limit"`
	TrustedProxies      []string `json:"trusted_proxies"`
	GossipHost          string   `json:"gossip_host"` // bind here, on a port of its own
	GossipKey           []byte   `json:"gossip_key"`
	Join                []string `json:"join"`      // gossip addresses: the control and the members that count quotas
	TLS                 bool     `json:"tls"`       // a TLS listener follows the data plane's
	Pin                 bool     `json:"pin"`       // run on one CPU of those the node may use: the slot's
	Netpoller           bool     `json:"netpoller"` // serve and dial through the runtime's netpoller
	LogLevel            string   `json:"log_level"`
}

// Files a worker inherits, after stdin, stdout and stderr.
const (
	workerFdControl = 3 + iota
	workerFdNonces
	workerFdBalance
	workerFdMesh
	workerFdData
	workerFdTLS
)
