package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// gql posts a GraphQL request.
func gql(t *testing.T, url, query string, vars map[string]any) (map[string]any, []any, int) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data   map[string]any `json:"data"`
		Errors []any          `json:"errors"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	return out.Data, out.Errors, resp.StatusCode
}

func code(errs []any) string {
	if len(errs) == 0 {
		return ""
	}
	e, _ := errs[0].(map[string]any)
	ext, _ := e["extensions"].(map[string]any)
	return fmt.Sprint(ext["code"])
}
