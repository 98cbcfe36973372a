// Package acl checks the service-invocation access control policies of
// deploy/k8s (deploy/k8s/base/dapr/configuration.yaml) with Dapr's own
// policy code, the one daprd 1.18.2 runs for every call it receives. Each
// caller proves its identity as it would between two sidecars: an mTLS
// handshake with an X.509 SVID (spiffe://public/ns/<namespace>/<app-id>)
// issued by a test CA, read back from the connection by Dapr's code.
package acl

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dapr/dapr/pkg/acl"
	"github.com/dapr/dapr/pkg/config"
	commonv1pb "github.com/dapr/dapr/pkg/proto/common/v1"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffegrpc/grpccredentials"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"sigs.k8s.io/yaml"
)

// configOf is the Configuration each app's sidecar runs with
// (dapr.io/config in deploy/k8s/base).
var configOf = map[string]string{
	"gateway":              "daca-config-gateway",
	"chat-service":         "daca-config-chat",
	"agent-memory-service": "daca-config-memory",
}

func TestAccessControlPolicies(t *testing.T) {
	acls := load(t, "../../../deploy/k8s/base/dapr/configuration.yaml")
	ca := newCA(t)
	td := spiffeid.RequireTrustDomainFromString("public")

	// One server per callee, applying that callee's policies to each call.
	addr := map[string]string{}
	for app, cfg := range configOf {
		list, ok := acls[cfg]
		if !ok || list == nil {
			t.Fatalf("no accessControl in Configuration %s", cfg)
		}
		addr[app] = serve(t, ca.svid(t, td, "daca", app), ca.bundle(td), list)
	}

	// Every call the code makes (the routes of internal/api, called by the
	// gateway's backend and chat-service's activities), and some
	// it must not be able to make.
	for _, c := range []struct {
		ns, caller, callee, method, verb string
		allow                            bool
	}{
		{"daca", "gateway", "agent-memory-service", "memories/u1", http.MethodGet, true},
		{"daca", "gateway", "agent-memory-service", "memories/u1/initialize", http.MethodPost, true},
		{"daca", "gateway", "agent-memory-service", "memories/u1", http.MethodDelete, true},
		{"daca", "gateway", "agent-memory-service", "conversations/s1", http.MethodGet, true},
		{"daca", "gateway", "agent-memory-service", "conversations/s1", http.MethodDelete, true},
		{"daca", "gateway", "agent-memory-service", "conversations/batch", http.MethodPost, true},
		{"daca", "gateway", "agent-memory-service", "owners/s1", http.MethodGet, true},
		{"daca", "gateway", "agent-memory-service", "users/u1/sessions", http.MethodGet, true},
		{"daca", "gateway", "agent-memory-service", "health", http.MethodGet, true},
		{"daca", "gateway", "chat-service", "chat", http.MethodPost, true},
		{"daca", "gateway", "chat-service", "chat/async", http.MethodPost, true},
		{"daca", "gateway", "chat-service", "chat/wf-1", http.MethodGet, true},
		{"daca", "gateway", "chat-service", "health", http.MethodGet, true},
		// chat-service reads the context of a turn, nothing else.
		{"daca", "chat-service", "agent-memory-service", "memories/u1", http.MethodGet, true},
		{"daca", "chat-service", "agent-memory-service", "conversations/s1", http.MethodGet, true},
		{"daca", "chat-service", "agent-memory-service", "context/u1", http.MethodGet, true}, // a turn's profile and history in one call
		{"daca", "chat-service", "agent-memory-service", "context/Ana.B@example.com", http.MethodGet, true},
		{"daca", "chat-service", "agent-memory-service", "context/u1", http.MethodPost, false},
		{"daca", "chat-service", "agent-memory-service", "usage/u1", http.MethodGet, true}, // the token budget
		{"daca", "chat-service", "agent-memory-service", "usage/u1", http.MethodDelete, false},
		{"daca", "chat-service", "agent-memory-service", "memories/Ana.B@example.com", http.MethodGet, true}, // ids as the services accept them
		{"daca", "chat-service", "agent-memory-service", "conversations/Session:7_x-y", http.MethodGet, true},
		{"daca", "chat-service", "agent-memory-service", "memories/u1", http.MethodDelete, false},
		{"daca", "chat-service", "agent-memory-service", "memories/u1/initialize", http.MethodPost, false},
		{"daca", "chat-service", "agent-memory-service", "conversations/s1", http.MethodDelete, false},
		{"daca", "chat-service", "agent-memory-service", "owners/s1", http.MethodPut, true}, // a turn claims its session
		{"daca", "chat-service", "agent-memory-service", "owners/Session:7_x-y", http.MethodPut, true},
		{"daca", "chat-service", "agent-memory-service", "owners/s1", http.MethodDelete, false},
		{"daca", "chat-service", "agent-memory-service", "users/u1/sessions", http.MethodGet, false},
		{"daca", "chat-service", "agent-memory-service", "users/u1/sessions", http.MethodGet, false},
		{"daca", "chat-service", "chat-service", "chat", http.MethodPost, false},
		// Nobody calls the gateway, the memory service calls nobody.
		{"daca", "chat-service", "gateway", "events/conversations", http.MethodPost, false},
		{"daca", "agent-memory-service", "chat-service", "chat", http.MethodPost, false},
		{"daca", "agent-memory-service", "gateway", "events/conversations", http.MethodPost, false},
		// Any other app, or the gateway's app id from another namespace.
		{"daca", "intruder", "agent-memory-service", "memories/u1", http.MethodGet, false},
		{"daca", "intruder", "chat-service", "chat", http.MethodPost, false},
		{"other", "gateway", "agent-memory-service", "memories/u1", http.MethodDelete, false},
		{"other", "gateway", "chat-service", "chat", http.MethodPost, false},
	} {
		t.Run(c.ns+"/"+c.caller+"->"+c.callee+" "+c.verb+" "+c.method, func(t *testing.T) {
			err := call(t, addr[c.callee], ca.svid(t, td, c.ns, c.caller), ca.bundle(td), c.method, c.verb)
			switch {
			case c.allow && err != nil:
				t.Fatalf("denied: %v", err)
			case !c.allow && status.Code(err) != codes.PermissionDenied:
				t.Fatalf("want PermissionDenied, got %v", err)
			}
		})
	}
}

// load parses the access control policies of every Configuration in the
// file, as daprd does for an app that speaks HTTP.
func load(t *testing.T, path string) map[string]*config.AccessControlList {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*config.AccessControlList{}
	for _, doc := range bytes.Split(b, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var c config.Configuration
		if err := yaml.UnmarshalStrict(doc, &c); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		list, err := acl.ParseAccessControlSpec(c.Spec.AccessControlSpec, true)
		if err != nil {
			t.Fatalf("%s: Configuration %s: %v", path, c.Name, err)
		}
		out[c.Name] = list
	}
	return out
}

// serve answers each call with the decision of Dapr's policy code for the
// operation and verb the call names in its metadata.
func serve(t *testing.T, svid *x509svid.SVID, bundle *x509bundle.Bundle, list *config.AccessControlList) string {
	t.Helper()
	srv := grpc.NewServer(
		grpc.Creds(grpccredentials.MTLSServerCredentials(svid, bundle, tlsconfig.AuthorizeAny())),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			if err := stream.RecvMsg(&emptypb.Empty{}); err != nil {
				return err
			}
			md, _ := metadata.FromIncomingContext(stream.Context())
			verb := commonv1pb.HTTPExtension_Verb(commonv1pb.HTTPExtension_Verb_value[strings.Join(md.Get("verb"), "")])
			if ok, msg := acl.ApplyAccessControlPolicies(stream.Context(), strings.Join(md.Get("operation"), ""), verb, true, list); !ok {
				return status.Error(codes.PermissionDenied, msg)
			}
			return stream.SendMsg(&emptypb.Empty{})
		}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

func call(t *testing.T, addr string, svid *x509svid.SVID, bundle *x509bundle.Bundle, method, verb string) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(grpccredentials.MTLSClientCredentials(svid, bundle, tlsconfig.AuthorizeAny())))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "operation", method, "verb", verb)
	return conn.Invoke(ctx, "/daca.acl/Invoke", &emptypb.Empty{}, &emptypb.Empty{})
}

// ca issues X.509 SVIDs, as Dapr's sentry does for each sidecar.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T) *ca {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &ca{cert: cert, key: key}
}

func (c *ca) bundle(td spiffeid.TrustDomain) *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(td, []*x509.Certificate{c.cert})
}

func (c *ca) svid(t *testing.T, td spiffeid.TrustDomain, ns, app string) *x509svid.SVID {
	t.Helper()
	id, err := spiffeid.FromSegments(td, "ns", ns, app)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, URIs: []*url.URL{id.URL()},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
}
