package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
)

// gatewayError builds a response that the gateway itself answers.
func ErrorResponse(req *http.Request, status, code int, msg string) *http.Response {
	body, _ := json.Marshal(struct {
		Errcode int    `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}{code, msg})
	return &http.Response{
		Status:        http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/json; charset=utf-8"}, "X-Wechat-Gateway": {"error"}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

func resultOf(resp *http.Response, err error) string {
	if err != nil {
		return "error"
	}
	if resp.StatusCode >= 500 {
		return "upstream_5xx"
	}
	return "ok"
}

func resultOfCode(code int) string {
	if code == 0 {
		return "ok"
	}
	return "wechat_error"
}
