package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// rawHTTP is the load generator's HTTP/1.1 client for the gateway
// comparison: keep-alive connections, each used by one request at a time,
// the request's bytes built once, the answer read only as far as its status
// and body. net/http's client hands every request and answer between
// goroutines of its own; on two cores shared with everything measured, that
// load generator took CPU from the processes whose latency it measured
// (wrk against the same processes found the gateway and the bare hop alike
// at 16 and 64 clients where the net/http client found them 1–1.5 ms apart).
type rawHTTP struct {
	addr  string
	req   []byte
	conns chan *rawConn
}

type rawConn struct {
	c net.Conn
	r *bufio.Reader
}

// newRawHTTP prepares method on rawURL with body (nil: none) and the
// headers, for at most conns connections at once.
func newRawHTTP(method, rawURL string, body []byte, header map[string]string, conns int) (*rawHTTP, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("rawHTTP: %s: only http", rawURL)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, u.RequestURI(), u.Host)
	for k, v := range header {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	if body != nil {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	return &rawHTTP{addr: u.Host, req: b.Bytes(), conns: make(chan *rawConn, conns)}, nil
}

// do sends the request once and reads the answer; an answer other than 2xx
// is an error.
func (h *rawHTTP) do() error {
	var rc *rawConn
	select {
	case rc = <-h.conns:
	default:
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			return err
		}
		rc = &rawConn{c: c, r: bufio.NewReaderSize(c, 16<<10)}
	}
	status, err := rc.roundTrip(h.req)
	if err != nil {
		rc.c.Close()
		return err
	}
	select {
	case h.conns <- rc:
	default:
		rc.c.Close()
	}
	if status/100 != 2 {
		return fmt.Errorf("%s: HTTP %d", h.addr, status)
	}
	return nil
}

// close closes the idle connections.
func (h *rawHTTP) close() {
	for {
		select {
		case rc := <-h.conns:
			rc.c.Close()
		default:
			return
		}
	}
}

func (rc *rawConn) roundTrip(req []byte) (int, error) {
	if _, err := rc.c.Write(req); err != nil {
		return 0, err
	}
	line, err := rc.r.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	length, chunked := -1, false
	for {
		line, err := rc.r.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 { // "\r\n": end of the header
			break
		}
		k, v, ok := strings.Cut(string(line), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.ToLower(k) {
		case "content-length":
			if length, err = strconv.Atoi(v); err != nil {
				return 0, fmt.Errorf("bad Content-Length %q", v)
			}
		case "transfer-encoding":
			chunked = strings.EqualFold(v, "chunked")
		}
	}
	switch {
	case chunked:
		return status, rc.skipChunks()
	case length >= 0:
		_, err := rc.r.Discard(length)
		return status, err
	default:
		return 0, errors.New("an answer without a length: the connection cannot be kept")
	}
}

func (rc *rawConn) skipChunks() error {
	for {
		line, err := rc.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		size, err := strconv.ParseInt(strings.TrimSpace(strings.SplitN(string(line), ";", 2)[0]), 16, 64)
		if err != nil {
			return fmt.Errorf("bad chunk size %q", line)
		}
		if _, err := rc.r.Discard(int(size) + 2); err != nil { // the chunk and its CRLF
			return err
		}
		if size == 0 {
			return nil // no trailers from the servers measured here
		}
	}
}
