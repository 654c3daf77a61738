package wechat

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

// countingBody counts what sniff reads before the client does.
type countingBody struct {
	r    io.Reader
	read int
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}
func (c *countingBody) Close() error { return nil }

// Responses are never buffered whole: a media download is not read at
// all, a large JSON answer of unknown length only up to the sniff limit,
// and in both cases the client still gets every byte.
func TestSniffNeverBuffersLargeResponses(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 8<<20)
	for _, tc := range []struct {
		name     string
		ct       string
		length   int64
		body     []byte
		maxRead  int
		wantCode int
	}{
		{"media with length", "image/jpeg", int64(len(big)), big, 0, 0},
		{"media chunked", "image/jpeg", -1, big, 0, 0},
		{"large json with length", "application/json", int64(len(big)), big, 0, 0},
		{"large json chunked", "application/json", -1, append([]byte(`{"errcode":40001,`), big...), sniffLimit + 1, 0},
		{"small token error", "text/plain", -1, []byte(`{"errcode":40001,"errmsg":"x"}`), sniffLimit + 1, 40001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := &countingBody{r: bytes.NewReader(tc.body)}
			resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {tc.ct}}, ContentLength: tc.length, Body: body}
			code, err := sniff(resp)
			if err != nil || code != tc.wantCode {
				t.Fatalf("sniff = %d, %v; want %d", code, err, tc.wantCode)
			}
			if body.read > tc.maxRead {
				t.Errorf("sniff read %d bytes before the client, want at most %d", body.read, tc.maxRead)
			}
			got, _ := io.ReadAll(resp.Body)
			if !bytes.Equal(got, tc.body) {
				t.Errorf("the client got %d bytes, want the %d sent", len(got), len(tc.body))
			}
		})
	}
}
