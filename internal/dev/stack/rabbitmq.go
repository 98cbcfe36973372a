package stack

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Brokers the stack can run its pub/sub on. The apps do not know which: the
// choice is which component files the sidecars load.
const (
	BrokerRedis    = "redis"    // Redis Streams (components/pubsub*.yaml)
	BrokerRabbitMQ = "rabbitmq" // components/brokers/rabbitmq/
)

// Brokers lists the valid values of Config.Broker.
var Brokers = []string{BrokerRedis, BrokerRabbitMQ}

// rabbitmqServer is where Debian's package puts the server script (its
// /usr/sbin wrapper switches to the rabbitmq user and the system's node).
const rabbitmqServer = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// startRabbitMQ starts a RabbitMQ node of its own for the run: its own
// Erlang port mapper (epmd) on a free port, data and credentials, listening
// on loopback only; with RedisPersist (make run) its queues and messages
// outlive the run like Redis's data. The broker's definitions
// (components/brokers/rabbitmq/definitions.json: the policy for the
// gateway's per-replica queues) are loaded at boot together with a user
// made for this run.
func (s *Stack) startRabbitMQ(ctx context.Context) error {
	c := &s.cfg
	progress := func(m string) { fmt.Fprintln(c.Progress, m) }
	if _, err := EnsureDebianPackage(ctx, "rabbitmq-server", rabbitmqServer, progress); err != nil {
		return fmt.Errorf("the RabbitMQ broker needs rabbitmq-server: %w", err)
	}
	epmd, err := findEpmd()
	if err != nil {
		return err
	}
	var amqpPort, distPort, epmdPort int
	for _, p := range []*int{&amqpPort, &distPort, &epmdPort} {
		if *p, err = freePort(); err != nil {
			return err
		}
	}
	dir, err := filepath.Abs(filepath.Join(c.RunDir, "rabbitmq"))
	if err != nil {
		return err
	}
	if !c.RedisPersist { // a run without persistence starts with an empty broker too
		if err := os.RemoveAll(filepath.Join(dir, "data")); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	user, password := "daca", randomToken()
	defs, err := rabbitDefinitions(filepath.Join(c.Components, "brokers", BrokerRabbitMQ, "definitions.json"), user, password)
	if err != nil {
		return err
	}
	files := map[string]string{
		"definitions.json": string(defs),
		"enabled_plugins":  "[].\n",
		"rabbitmq.conf": strings.Join([]string{
			"listeners.tcp.1 = 127.0.0.1:" + strconv.Itoa(amqpPort),
			"definitions.import_backend = local_filesystem",
			"definitions.local.path = " + filepath.Join(dir, "definitions.json"),
			"log.console = true",
			"log.console.level = warning",
			"log.file = false",
			"",
		}, "\n"),
		// The Erlang distribution cookie (rabbitmqctl would need it).
		".erlang.cookie": randomToken(),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return err
		}
	}

	e, err := s.spawn("epmd", epmd, []string{"-port", strconv.Itoa(epmdPort), "-address", "127.0.0.1"}, nil, dir)
	if err != nil {
		return err
	}
	s.Epmd, s.epmdPort = e, epmdPort
	if err := waitFor(ctx, 10*time.Second, e, func() error { return tcpUp(epmdPort) }); err != nil {
		return fmt.Errorf("epmd not ready: %w", err)
	}
	// The node name is where its data lives: one per run directory (each
	// stack has its own epmd, so two stacks never see each other's name).
	node := "daca@localhost"
	p, err := s.spawn("rabbitmq", rabbitmqServer, nil, []string{
		"HOME=" + dir, // the cookie
		"RABBITMQ_NODENAME=" + node,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(amqpPort),
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(distPort),
		"ERL_EPMD_PORT=" + strconv.Itoa(epmdPort),
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(dir, "data"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(dir, "log"),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_PID_FILE=" + filepath.Join(dir, "rabbitmq.pid"),
	}, dir)
	if err != nil {
		return err
	}
	s.RabbitMQ = p
	s.RabbitMQURL = fmt.Sprintf("amqp://%s:%s@127.0.0.1:%d/", user, password, amqpPort)
	s.rabbitPort = amqpPort
	if err := waitFor(ctx, 60*time.Second, p, func() error { return amqpUp(amqpPort) }); err != nil {
		return fmt.Errorf("rabbitmq not ready: %w", err)
	}
	return nil
}

func findEpmd() (string, error) {
	m, _ := filepath.Glob("/usr/lib/erlang/erts-*/bin/epmd")
	if len(m) == 0 {
		return "", errors.New("rabbitmq-server is installed but Erlang's epmd is not (/usr/lib/erlang/erts-*/bin/epmd)")
	}
	return m[len(m)-1], nil
}

func tcpUp(port int) error {
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return err
	}
	return conn.Close()
}

// amqpUp sends the AMQP 0-9-1 protocol header and expects the broker's
// Connection.Start frame (type 1) back: the port alone opens before the
// broker accepts connections.
func amqpUp(port int) error {
	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		return err
	}
	b := make([]byte, 1)
	if _, err := conn.Read(b); err != nil {
		return err
	}
	if b[0] != 1 {
		return fmt.Errorf("amqp: unexpected frame type %d", b[0])
	}
	return nil
}

// rabbitDefinitions returns the broker definitions of the file with a user
// (administrator of every vhost in it) added.
func rabbitDefinitions(file, user, password string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var defs map[string]any
	if err := json.Unmarshal(b, &defs); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	defs["users"] = []any{map[string]any{
		"name":              user,
		"password_hash":     rabbitPasswordHash(password),
		"hashing_algorithm": "rabbit_password_hashing_sha256",
		"tags":              []string{"administrator"},
	}}
	var perms []any
	vhosts, _ := defs["vhosts"].([]any)
	for _, v := range vhosts {
		name, _ := v.(map[string]any)["name"].(string)
		perms = append(perms, map[string]any{"user": user, "vhost": name, "configure": ".*", "write": ".*", "read": ".*"})
	}
	if len(perms) == 0 {
		return nil, fmt.Errorf("%s: no vhosts", file)
	}
	defs["permissions"] = perms
	return json.Marshal(defs)
}

// rabbitPasswordHash is RabbitMQ's salted SHA-256 password hash:
// base64(salt ‖ sha256(salt ‖ password)) with a 4-byte salt.
func rabbitPasswordHash(password string) string {
	salt := make([]byte, 4)
	if _, err := rand.Read(salt); err != nil {
		panic(err)
	}
	sum := sha256.Sum256(append(append([]byte{}, salt...), password...))
	return base64.StdEncoding.EncodeToString(append(salt, sum[:]...))
}
