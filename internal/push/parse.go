package push

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"strconv"
	"strings"
)

// Limits of the parsers. WeChat's messages are flat: <xml> and one level
// of fields, a few events two or three (SendPicsInfo/PicList/item).
const (
	maxDepth    = 8
	maxElements = 512
	maxField    = 16 << 10 // one field's text; Content is at most 2048 bytes
)

// Parse failures. None quotes the input.
var (
	ErrNotXML    = errors.New("not a well-formed <xml> message")
	ErrNotJSON   = errors.New("not a well-formed JSON object")
	ErrDoctype   = errors.New("DOCTYPE, entity declarations and processing instructions are refused")
	ErrTooDeep   = errors.New("nested too deeply")
	ErrTooMany   = errors.New("too many elements")
	ErrBigField  = errors.New("a field is too long")
	ErrNoEncrypt = errors.New("no Encrypt field")
	ErrDuplicate = errors.New("a field is given twice")
)

// Fields are the parts of a push the gateway reads: the envelope's
// (ToUserName, AgentID, Encrypt) and the message's. Values are the
// text of top-level elements (XML) or members (JSON); numbers as decimal.
type Fields struct {
	ToUserName   string
	FromUserName string
	CreateTime   string
	MsgType      string
	Event        string
	MsgID        string
	AgentID      string
	Encrypt      string

	seen uint16 // the fields set so far
}

// set stores one field; a field given twice (in either spelling) is
// refused, so that the gateway and the app, whose parser may keep the
// first where ours keeps the last, cannot read one document two ways.
func (f *Fields) set(name, v string) error {
	var p *string
	var bit uint16
	switch name {
	case "ToUserName":
		p, bit = &f.ToUserName, 1
	case "FromUserName":
		p, bit = &f.FromUserName, 2
	case "CreateTime":
		p, bit = &f.CreateTime, 4
	case "MsgType":
		p, bit = &f.MsgType, 8
	case "Event":
		p, bit = &f.Event, 16
	case "MsgId", "MsgID":
		p, bit = &f.MsgID, 32
	case "AgentID", "AgentId":
		p, bit = &f.AgentID, 64
	case "Encrypt":
		p, bit = &f.Encrypt, 128
	default:
		return nil
	}
	if f.seen&bit != 0 {
		return ErrDuplicate
	}
	f.seen |= bit
	*p = v
	return nil
}

// wanted reports whether a top-level name is one Fields keeps, so the
// parser copies no other text.
func wanted(name string) bool {
	switch name {
	case "ToUserName", "FromUserName", "CreateTime", "MsgType", "Event", "MsgId", "MsgID", "AgentID", "AgentId", "Encrypt":
		return true
	}
	return false
}

// ParseXML reads a WeChat XML document: one <xml> root, no DOCTYPE (so no
// entity can be declared, and encoding/xml's strict mode refuses any
// undeclared one), no processing instruction but the XML declaration, at
// most maxDepth levels and maxElements elements.
func ParseXML(b []byte) (Fields, error) {
	var f Fields
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	d.CharsetReader = nil // anything but UTF-8 is refused
	depth, elems, roots := 0, 0, 0
	var cur string // the wanted top-level field being read
	var text []byte
	for {
		tok, err := d.Token() // not RawToken: Token checks that end tags match
		if err == io.EOF {
			break
		}
		if err != nil {
			return Fields{}, ErrNotXML
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			elems++
			switch {
			case depth > maxDepth:
				return Fields{}, ErrTooDeep
			case elems > maxElements:
				return Fields{}, ErrTooMany
			case depth == 1:
				roots++
				if roots > 1 || t.Name.Local != "xml" || t.Name.Space != "" {
					return Fields{}, ErrNotXML
				}
			case depth == 2 && wanted(t.Name.Local) && t.Name.Space == "":
				cur, text = t.Name.Local, text[:0]
			case depth == 3:
				cur = "" // a field with children is not a value
			}
		case xml.EndElement:
			if depth == 2 && cur != "" {
				if err := f.set(cur, strings.TrimSpace(string(text))); err != nil {
					return Fields{}, err
				}
				cur = ""
			}
			depth--
			if depth < 0 {
				return Fields{}, ErrNotXML
			}
		case xml.CharData:
			if depth == 0 && len(bytes.TrimSpace(t)) > 0 {
				return Fields{}, ErrNotXML
			}
			if cur != "" {
				if len(text)+len(t) > maxField {
					return Fields{}, ErrBigField
				}
				text = append(text, t...)
			}
		case xml.Directive:
			return Fields{}, ErrDoctype
		case xml.ProcInst:
			if t.Target != "xml" || roots > 0 {
				return Fields{}, ErrDoctype
			}
		}
	}
	if roots != 1 || depth != 0 {
		return Fields{}, ErrNotXML
	}
	return f, nil
}

// ParseJSON reads a mini program's JSON push: one object, at most
// maxDepth levels; numbers kept as written.
func ParseJSON(b []byte) (Fields, error) {
	if err := jsonDepth(b); err != nil {
		return Fields{}, err
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return Fields{}, ErrNotJSON
	}
	var f Fields
	keys := map[string]bool{}
	for d.More() {
		t, err := d.Token()
		k, ok := t.(string)
		if err != nil || !ok {
			return Fields{}, ErrNotJSON
		}
		// encoding/json keeps the last of two equal keys; another
		// parser may keep the first: refuse both.
		if keys[k] {
			return Fields{}, ErrDuplicate
		}
		keys[k] = true
		if len(keys) > maxElements {
			return Fields{}, ErrTooMany
		}
		var raw json.RawMessage
		if err := d.Decode(&raw); err != nil {
			return Fields{}, ErrNotJSON
		}
		if !wanted(k) {
			continue
		}
		if len(raw) > maxField {
			return Fields{}, ErrBigField
		}
		v, ok := jsonScalar(raw)
		if !ok {
			return Fields{}, ErrNotJSON
		}
		if err := f.set(k, v); err != nil {
			return Fields{}, err
		}
	}
	if t, err := d.Token(); err != nil || t != json.Delim('}') {
		return Fields{}, ErrNotJSON
	}
	if _, err := d.Token(); err != io.EOF {
		return Fields{}, ErrNotJSON // trailing data
	}
	return f, nil
}

// jsonScalar is a string's value or a number's text.
func jsonScalar(raw json.RawMessage) (string, bool) {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	}
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		return "", false
	}
	return n.String(), true
}

// jsonDepth refuses nesting deeper than maxDepth before anything is
// decoded, so a body of ten thousand brackets costs one pass.
func jsonDepth(b []byte) error {
	depth, inStr, esc := 0, false, false
	for _, c := range b {
		switch {
		case inStr:
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
		case c == '"':
			inStr = true
		case c == '{' || c == '[':
			depth++
			if depth > maxDepth {
				return ErrTooDeep
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

// createTime parses CreateTime (Unix seconds).
func (f *Fields) createTime() (int64, bool) {
	n, err := strconv.ParseInt(f.CreateTime, 10, 64)
	return n, err == nil && n > 0
}
