package cluster

import (
	"errors"
	"fmt"
	"log"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

// gossipTransport is memberlist's network layer: UDP packets and TCP streams on one
// port, as memberlist's NetTransport, with two differences.
//
// A received packet is read into one reused buffer and handed on as a copy of its own
// size. NetTransport allocates a fresh 64 KiB buffer per packet; the used nonces every
// node sends its peers each millisecond made that about 128 MB of garbage a second per
// node, and the collections it forced, some 6% of a 3-node cluster's CPU under the
// bench's signed load.
//
// And an optional outbound drop filter lets tests cut links (SetDropFilter).
//
// Its methods are safe for concurrent use.
type gossipTransport struct {
	bindIP string
	tcp    *net.TCPListener
	udp    *net.UDPConn
	logger *log.Logger

	packetCh  chan *memberlist.Packet
	streamCh  chan net.Conn
	drop      dropFilter
	done      chan struct{} // closed by Shutdown
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*gossipTransport)(nil)

const (
	// maxGossipPacket is the largest UDP payload there is.
	maxGossipPacket = 65536
	// gossipRecvBuffer is the UDP socket's receive buffer asked for (halved until the
	// kernel takes it), so bursts of packets are not dropped while the reader is busy.
	gossipRecvBuffer = 2 << 20
)

var errDropped = errors.New("gossip: link cut by drop filter")

// newGossipTransport listens on bindIP:port, TCP first and then UDP on the port TCP
// got (port 0 picks one; the UDP bind can then fail if another socket has it).
func newGossipTransport(bindIP string, port int, logger *log.Logger) (*gossipTransport, error) {
	ip := net.ParseIP(bindIP)
	if ip == nil {
		return nil, fmt.Errorf("gossip: bind address %q is not an IP", bindIP)
	}
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: tcp.Addr().(*net.TCPAddr).Port})
	if err != nil {
		tcp.Close()
		return nil, err
	}
	for size := gossipRecvBuffer; size > 0; size /= 2 {
		if udp.SetReadBuffer(size) == nil {
			break
		}
	}
	t := &gossipTransport{
		bindIP: bindIP, tcp: tcp, udp: udp, logger: logger,
		packetCh: make(chan *memberlist.Packet), streamCh: make(chan net.Conn), done: make(chan struct{}),
	}
	t.wg.Add(2)
	go t.readPackets()
	go t.acceptStreams()
	return t, nil
}

// port is the port the transport is bound to.
func (t *gossipTransport) port() int { return t.tcp.Addr().(*net.TCPAddr).Port }

// FinalAdvertiseAddr is the address other members reach this one at: ip:port when
// given, else the bound address, or a private address of this host when bound to all.
func (t *gossipTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		a := net.ParseIP(ip)
		if a == nil {
			return nil, 0, fmt.Errorf("gossip: advertise address %q is not an IP", ip)
		}
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	a := t.tcp.Addr().(*net.TCPAddr).IP
	if a.IsUnspecified() {
		private, err := sockaddr.GetPrivateIP()
		if err != nil {
			return nil, 0, fmt.Errorf("gossip: interface addresses: %v", err)
		}
		if a = net.ParseIP(private); a == nil {
			return nil, 0, errors.New("gossip: no private IP address to advertise; give one")
		}
	}
	return a, t.port(), nil
}

func (t *gossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.drop.cuts(addr) {
		return time.Now(), nil // a lost packet, not an error
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteTo(b, ua)
	return time.Now(), err
}

func (t *gossipTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

func (t *gossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

func (t *gossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.drop.cuts(addr) {
		return nil, errDropped
	}
	return net.DialTimeout("tcp", addr, timeout)
}

func (t *gossipTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

func (t *gossipTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown closes the sockets and waits for the reader and the acceptor to end.
func (t *gossipTransport) Shutdown() error {
	t.closeOnce.Do(func() {
		close(t.done)
		t.tcp.Close()
		t.udp.Close()
	})
	t.wg.Wait()
	return nil
}

func (t *gossipTransport) closed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

func (t *gossipTransport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, maxGossipPacket)
	for {
		n, from, err := t.udp.ReadFrom(buf)
		at := time.Now() // as close to the read as can be: memberlist times probes with it
		if err != nil {
			if t.closed() {
				return
			}
			t.logger.Printf("[ERR] gossip: reading a UDP packet: %v", err)
			continue
		}
		if n == 0 {
			continue // every memberlist message has at least its type byte
		}
		own := make([]byte, n)
		copy(own, buf)
		select {
		case t.packetCh <- &memberlist.Packet{Buf: own, From: from, Timestamp: at}:
		case <-t.done:
			return
		}
	}
}

func (t *gossipTransport) acceptStreams() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		c, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.closed() {
				return
			}
			// Out of file descriptors and the like: back off, up to a second.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.logger.Printf("[ERR] gossip: accepting a TCP stream: %v", err)
			time.Sleep(delay)
			continue
		}
		delay = 0
		select {
		case t.streamCh <- c:
		case <-t.done:
			c.Close()
			return
		}
	}
}
