package wechat

import (
	"encoding/json"
	"strings"
)

// metricValue finds one sample on a /metrics page; -1 when absent.
func metricValue(page, name string, labels ...string) float64 {
	for _, line := range strings.Split(page, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		var v float64
		fields := strings.Fields(line)
		if err := json.Unmarshal([]byte(fields[len(fields)-1]), &v); err == nil {
			return v
		}
	}
	return -1
}
