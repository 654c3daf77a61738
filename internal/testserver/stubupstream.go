package testserver

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
)

// StubUpstream answers every request in memory with Body as JSON, as
// WeChat's user/info would, so that a transport's RoundTrip is measured
// (allocations, CPU) without a network. The account and component
// benchmarks share it, so both are measured against the same upstream.
type StubUpstream struct{ Body []byte }

func (s StubUpstream) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	return &http.Response{
		StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json; encoding=utf-8"}, "Content-Length": {strconv.Itoa(len(s.Body))}},
		Body:          io.NopCloser(bytes.NewReader(s.Body)),
		ContentLength: int64(len(s.Body)),
		Request:       req,
	}, nil
}

// OKBody is the size and shape of a typical small WeChat answer.
var OKBody = []byte(`{"errcode":0,"errmsg":"ok","openid":"o1","nickname":"bench","subscribe":1,"language":"zh_CN"}`)

// BenchToken is a token of WeChat's length and alphabet.
const BenchToken = "82_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUv"
