package fakewechat

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strconv"
)

// maxUpload is WeChat's media size limit (10 MB); keptMedia bounds how
// many uploads media/get can serve back, so the fake stays small.
const (
	maxUpload = 10 << 20
	keptMedia = 8
)

// upload is one file from /cgi-bin/media/upload.
type upload struct {
	id, ctype string
	data      []byte
}

// mediaStore keeps the last keptMedia uploads, oldest first.
type mediaStore struct{ items []upload }

func (m *mediaStore) put(u upload) {
	if len(m.items) >= keptMedia {
		m.items = m.items[1:]
	}
	m.items = append(m.items, u)
}

func (m *mediaStore) get(id string) (upload, bool) {
	for _, u := range m.items {
		if u.id == id {
			return u, true
		}
	}
	return upload{}, false
}

var mediaTypes = map[string]bool{"image": true, "voice": true, "video": true, "thumb": true}

// mediaUpload serves POST /cgi-bin/media/upload?type=T: a multipart form
// whose "media" part is the file, as WeChat (and file.api.weixin.qq.com)
// take it. The answer adds size and sha256 so tests can check the bytes
// arrived intact; media/get?media_id= gives the file back.
func (s *Server) mediaUpload(w http.ResponseWriter, r *http.Request, tk *token) {
	typ := r.URL.Query().Get("type")
	if !mediaTypes[typ] {
		writeErr(w, 40004, "invalid media type")
		return
	}
	mr, err := r.MultipartReader()
	if err != nil {
		writeErr(w, 41005, "media data missing")
		return
	}
	for {
		part, err := mr.NextPart()
		if err != nil {
			writeErr(w, 41005, "media data missing")
			return
		}
		if part.FormName() != "media" {
			continue
		}
		data, err := io.ReadAll(io.LimitReader(part, maxUpload+1))
		if err != nil {
			writeErr(w, 41005, "media data missing")
			return
		}
		if len(data) > maxUpload {
			writeErr(w, 40006, "invalid media size")
			return
		}
		ctype := part.Header.Get("Content-Type")
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		id := "MEDIA_" + randString(24)
		now := s.opts.Now()
		s.mu.Lock()
		s.uploads.put(upload{id: id, ctype: ctype, data: data})
		s.mu.Unlock()
		sum := sha256.Sum256(data)
		writeJSON(w, map[string]any{
			"type":              typ,
			"media_id":          id,
			"created_at":        now.Unix(),
			"size":              len(data),
			"sha256":            hex.EncodeToString(sum[:]),
			"caddy_wechat_fake": proofOf(w, tk),
		})
		return
	}
}

// uploaded serves media/get for a media_id from mediaUpload.
func (s *Server) uploaded(w http.ResponseWriter, id string) bool {
	s.mu.Lock()
	u, ok := s.uploads.get(id)
	s.mu.Unlock()
	if !ok {
		return false
	}
	h := w.Header()
	h.Set("Content-Type", u.ctype)
	h.Set("Content-Disposition", `attachment; filename="`+u.id+`"`)
	h.Set("Content-Length", strconv.Itoa(len(u.data)))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, bytes.NewReader(u.data))
	return true
}
