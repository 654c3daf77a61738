package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
)

// ErrorResponse is an error the gateway answers itself, in WeChat's own
// shape ({"errcode","errmsg"}) so that any SDK can read it.
func ErrorResponse(req *http.Request, status, code int, msg string) *http.Response {
	return ownAnswer(req, status, "application/json; charset=utf-8", "error", struct {
		Errcode int    `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}{code, msg})
}

// ownAnswer is a JSON response that never went upstream; its
// X-Wechat-Gateway header says what kind (error, placeholder).
func ownAnswer(req *http.Request, status int, contentType, kind string, v any) *http.Response {
	body, _ := json.Marshal(v)
	return &http.Response{
		Status:        http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {contentType}, "X-Wechat-Gateway": {kind}},
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
