package push

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		json bool
		err  error
	}{
		{"<xml><ToUserName>a</ToUserName><MsgId>1</MsgId></xml>", false, nil},
		{`<?xml version="1.0" encoding="UTF-8"?><xml><A>1</A></xml>`, false, nil},
		{"<xml><MsgId>1</MsgId><MsgID>2</MsgID></xml>", false, ErrDuplicate},
		{"<xml><a></b></xml>", false, ErrNotXML},
		{"<xml></xml><xml></xml>", false, ErrNotXML},
		{"<xml></xml>trailing", false, ErrNotXML},
		{"<notxml></notxml>", false, ErrNotXML},
		{"<xml><?php x?></xml>", false, ErrDoctype},
		{"<!DOCTYPE xml><xml></xml>", false, ErrDoctype},
		{"<xml>&ent;</xml>", false, ErrNotXML},
		{"<xml><Content>" + strings.Repeat("a", maxField+1) + "</Content></xml>", false, nil}, // not a kept field
		{"<xml><Event>" + strings.Repeat("a", maxField+1) + "</Event></xml>", false, ErrBigField},
		{"<xml>" + strings.Repeat("<a/>", maxElements) + "</xml>", false, ErrTooMany},
		{`{"ToUserName":"a","CreateTime":123,"MsgId":12345678901234567890}`, true, nil},
		{`{"ToUserName":"a","ToUserName":"b"}`, true, ErrDuplicate},
		{`{"x":1,"x":2}`, true, ErrDuplicate},
		{`{"a":1} {"b":2}`, true, ErrNotJSON},
		{`[1,2]`, true, ErrNotJSON},
		{`{"MsgType":{"nested":1}}`, true, ErrNotJSON},
		{strings.Repeat("[", 20), true, ErrTooDeep},
		{`{"a":"[[[[[[[[[[[[[[[[[[[["}`, true, nil}, // brackets in a string do not nest
	} {
		var f Fields
		var err error
		if tc.json {
			f, err = ParseJSON([]byte(tc.in))
		} else {
			f, err = ParseXML([]byte(tc.in))
		}
		if err != tc.err {
			t.Errorf("%.60q: %v, want %v", tc.in, err, tc.err)
		}
		if tc.json && tc.err == nil && strings.Contains(tc.in, "MsgId") && (f.MsgID != "12345678901234567890" || f.CreateTime != "123") {
			t.Errorf("numbers: %+v", f)
		}
	}
}
