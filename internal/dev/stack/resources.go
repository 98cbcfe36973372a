package stack

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/daca-go/daca/internal/contract"
)

// mcpServerFile is the MCPServer resource of the reference tool server, and
// toolAddr the address it names: make run's (stack.Tools' port).
const (
	mcpServerFile = "mcpserver-tools.yaml"
	toolAddr      = "127.0.0.1:8020"
)

// resourcesDir returns the Dapr resources directory of the run: a
// directory in the run directory with a link to every file of components/,
// where the broker's files (components/brokers/<broker>/*.yaml, for a
// broker other than Redis) replace those of the same name. The tool
// server's MCPServer resource is written there with the port of the stack's
// tool server (toolPort), and left out of a stack without one (0).
func (c *Config) resourcesDir(toolPort int) (string, error) {
	files := map[string]string{}
	base, err := filepath.Glob(filepath.Join(c.Components, "*.yaml"))
	if err != nil {
		return "", err
	}
	for _, f := range base {
		files[filepath.Base(f)] = f
	}
	if c.Broker != BrokerRedis {
		over := filepath.Join(c.Components, "brokers", c.Broker)
		overrides, err := filepath.Glob(filepath.Join(over, "*.yaml"))
		if err != nil || len(overrides) == 0 {
			return "", fmt.Errorf("broker %s: no component files in %s", c.Broker, over)
		}
		for _, f := range overrides {
			files[filepath.Base(f)] = f
		}
	}
	dir := filepath.Join(c.RunDir, "resources-"+c.Broker)
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for name, f := range files {
		if name == mcpServerFile {
			if toolPort == 0 {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				return "", err
			}
			if !strings.Contains(string(b), toolAddr) {
				return "", fmt.Errorf("%s: no url with %s to give the stack's tool server port", f, toolAddr)
			}
			b = []byte(strings.ReplaceAll(string(b), toolAddr, "127.0.0.1:"+strconv.Itoa(toolPort)))
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				return "", err
			}
			continue
		}
		abs, err := filepath.Abs(f)
		if err != nil {
			return "", err
		}
		if err := os.Symlink(abs, filepath.Join(dir, name)); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// ensureToolToken gives the secret store file a tool-server-token when it
// has none (or an empty one): a random one, the other secrets kept as they
// are. It reports whether it wrote one.
func ensureToolToken(path string) (bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	var secrets map[string]any
	if err := json.Unmarshal(b, &secrets); err != nil {
		return false, fmt.Errorf("secret store file %s: %w", path, err)
	}
	if v, _ := secrets[contract.SecretToolToken].(string); len(v) >= 16 {
		return false, nil
	}
	tok := make([]byte, 24)
	rand.Read(tok)
	secrets[contract.SecretToolToken] = hex.EncodeToString(tok)
	out, err := json.MarshalIndent(secrets, "", "  ")
	if err != nil {
		return false, err
	}
	return true, os.WriteFile(path, append(out, '\n'), 0o600)
}
