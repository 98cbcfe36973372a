package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Dapr resources, decoded strictly: an unknown or misspelt field fails.
type daprMetadata struct {
	Name         string `json:"name"`
	Value        any    `json:"value,omitempty"`
	EnvRef       string `json:"envRef,omitempty"`
	SecretKeyRef *struct {
		Name string `json:"name"`
		Key  string `json:"key"`
	} `json:"secretKeyRef,omitempty"`
}

type component struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		Type     string         `json:"type"`
		Version  string         `json:"version"`
		Metadata []daprMetadata `json:"metadata"`
	} `json:"spec"`
	Scopes []string `json:"scopes,omitempty"`
}

type configuration struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		Tracing struct {
			SamplingRate string `json:"samplingRate"`
		} `json:"tracing"`
		Secrets struct {
			Scopes []struct {
				StoreName      string   `json:"storeName"`
				DefaultAccess  string   `json:"defaultAccess"`
				AllowedSecrets []string `json:"allowedSecrets,omitempty"`
			} `json:"scopes"`
		} `json:"secrets"`
		AccessControl struct {
			DefaultAction string `json:"defaultAction"`
			TrustDomain   string `json:"trustDomain"`
			Policies      []struct {
				AppID         string `json:"appId"`
				Namespace     string `json:"namespace"`
				TrustDomain   string `json:"trustDomain"`
				DefaultAction string `json:"defaultAction"`
				Operations    []struct {
					Name     string   `json:"name"`
					HTTPVerb []string `json:"httpVerb"`
					Action   string   `json:"action"`
				} `json:"operations,omitempty"`
			} `json:"policies,omitempty"`
		} `json:"accessControl"`
		Workflow struct {
			ActivityConcurrencyLimits []struct {
				Name          string `json:"name"`
				MaxConcurrent int    `json:"maxConcurrent"`
			} `json:"activityConcurrencyLimits,omitempty"`
		} `json:"workflow"`
	} `json:"spec"`
}

type subscription struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		PubsubName string `json:"pubsubname"`
		Topic      string `json:"topic"`
		Routes     struct {
			Default string `json:"default"`
		} `json:"routes"`
	} `json:"spec"`
	Scopes []string `json:"scopes"`
}

type resiliency struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       map[string]any    `json:"spec"`
}

// wfPolicy is a WorkflowAccessPolicy.
type wfPolicy struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Scopes     []string          `json:"scopes"`
	Spec       map[string]any    `json:"spec"`
}

type rendered struct {
	wfPolicies    []wfPolicy
	workloads     map[string]workload // Deployments and StatefulSets by name
	services      map[string]corev1.Service
	secrets       map[string]corev1.Secret
	hpas          []autoscalingv2.HorizontalPodAutoscaler
	pdbs          []policyv1.PodDisruptionBudget
	policies      []networkingv1.NetworkPolicy
	components    map[string]component
	configs       map[string]configuration
	subscriptions []subscription
	resiliency    []resiliency
	namespaces    []string
	mcpServers    []map[string]any
	configMaps    map[string]corev1.ConfigMap
}

// render builds an overlay (from a copy of deploy/k8s, with the local
// overlay's secret files made up) and decodes every object strictly.
func render(t *testing.T, overlay string) rendered {
	t.Helper()
	tmp := t.TempDir()
	if err := os.CopyFS(tmp, os.DirFS(filepath.Join(root(t), "deploy", "k8s"))); err != nil {
		t.Fatal(err)
	}
	secrets := filepath.Join(tmp, "overlays", "local", "secrets")
	os.MkdirAll(secrets, 0o700)
	for f, kv := range map[string]string{"dapr-api-token.env": "token=t1", "app-api-token.env": "token=t2",
		"gemini-api-key.env": "gemini-api-key=", "gateway-jwt-secret.env": "gateway-jwt-secret=s", "tool-server-token.env": "tool-server-token=t3"} {
		if err := os.WriteFile(filepath.Join(secrets, f), []byte(kv+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(tmp, "overlays", overlay))
	if err != nil {
		t.Fatalf("kustomize build overlays/%s: %v", overlay, err)
	}
	r := rendered{workloads: map[string]workload{}, services: map[string]corev1.Service{}, secrets: map[string]corev1.Secret{},
		components: map[string]component{}, configs: map[string]configuration{}}
	for _, res := range m.Resources() {
		b, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		decode := func(v any) {
			if err := yaml.UnmarshalStrict(b, v); err != nil {
				t.Fatalf("%s %s does not decode strictly: %v", res.GetKind(), res.GetName(), err)
			}
		}
		if res.GetKind() != "Namespace" && res.GetNamespace() != "daca" {
			t.Errorf("%s %s is not in namespace daca", res.GetKind(), res.GetName())
		}
		switch res.GetKind() {
		case "Deployment":
			var d appsv1.Deployment
			decode(&d)
			if _, app := apps[d.Name]; !app {
				// the local overlay's Redis
			} else if u := d.Spec.Strategy.RollingUpdate; d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || u == nil || u.MaxUnavailable == nil || u.MaxUnavailable.IntValue() != 0 {
				t.Errorf("Deployment %s: strategy %+v; want a rolling update with no replica unavailable", d.Name, d.Spec.Strategy)
			}
			r.workloads[d.Name] = workload{kind: "Deployment", template: d.Spec.Template, replicas: d.Spec.Replicas}
		case "StatefulSet":
			var d appsv1.StatefulSet
			decode(&d)
			if d.Spec.ServiceName == "" || d.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
				t.Errorf("StatefulSet %s: serviceName %q, podManagementPolicy %q", d.Name, d.Spec.ServiceName, d.Spec.PodManagementPolicy)
			}
			r.workloads[d.Name] = workload{kind: "StatefulSet", template: d.Spec.Template, replicas: d.Spec.Replicas}
		case "Service":
			var s corev1.Service
			decode(&s)
			r.services[s.Name] = s
		case "Secret":
			var s corev1.Secret
			decode(&s)
			r.secrets[s.Name] = s
		case "Namespace":
			var n corev1.Namespace
			decode(&n)
			r.namespaces = append(r.namespaces, n.Name)
		case "HorizontalPodAutoscaler":
			var h autoscalingv2.HorizontalPodAutoscaler
			decode(&h)
			r.hpas = append(r.hpas, h)
		case "PodDisruptionBudget":
			var p policyv1.PodDisruptionBudget
			decode(&p)
			r.pdbs = append(r.pdbs, p)
		case "NetworkPolicy":
			var p networkingv1.NetworkPolicy
			decode(&p)
			r.policies = append(r.policies, p)
		case "Component":
			var c component
			decode(&c)
			r.components[c.Metadata.Name] = c
		case "Configuration":
			var c configuration
			decode(&c)
			r.configs[c.Metadata.Name] = c
		case "Subscription":
			var s subscription
			decode(&s)
			r.subscriptions = append(r.subscriptions, s)
		case "Resiliency":
			var x resiliency
			decode(&x)
			r.resiliency = append(r.resiliency, x)
		case "WorkflowAccessPolicy":
			var x wfPolicy
			decode(&x)
			r.wfPolicies = append(r.wfPolicies, x)
		case "MCPServer":
			var x map[string]any
			if err := yaml.Unmarshal(b, &x); err != nil {
				t.Fatal(err)
			}
			r.mcpServers = append(r.mcpServers, x)
		case "ConfigMap":
			var cm corev1.ConfigMap
			decode(&cm)
			if r.configMaps == nil {
				r.configMaps = map[string]corev1.ConfigMap{}
			}
			r.configMaps[cm.Name] = cm
		default:
			t.Errorf("unexpected kind %s (%s)", res.GetKind(), res.GetName())
		}
	}
	return r
}

// workload is the part of a Deployment or StatefulSet the checks read.
type workload struct {
	kind     string
	template corev1.PodTemplateSpec
	replicas *int32
}

func env(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func TestKustomizeOverlays(t *testing.T) {
	for _, overlay := range []string{"local", "production"} {
		t.Run(overlay, func(t *testing.T) {
			r := render(t, overlay)
			// The apps, as `make run` runs them.
			for id, want := range apps {
				d, ok := r.workloads[id]
				if !ok {
					t.Fatalf("no Deployment or StatefulSet %s", id)
				}
				a := d.template.Annotations
				if a["dapr.io/enabled"] != "true" || a["dapr.io/app-id"] != id || a["dapr.io/app-port"] != want.port {
					t.Fatalf("%s: Dapr annotations %v", id, a)
				}
				if _, ok := r.configs[a["dapr.io/config"]]; !ok {
					t.Fatalf("%s: dapr.io/config %q is not rendered", id, a["dapr.io/config"])
				}
				cfg := r.configs[a["dapr.io/config"]]
				// Service invocation is deny-by-default; the policies name the
				// namespace the apps are deployed to (what they allow is checked
				// with Dapr's own policy code in tools/dapr/acl).
				if ac := cfg.Spec.AccessControl; ac.DefaultAction != "deny" || ac.TrustDomain != "public" {
					t.Fatalf("%s: accessControl %+v; want defaultAction deny, trustDomain public", id, ac)
				}
				for _, p := range cfg.Spec.AccessControl.Policies {
					if p.Namespace != "daca" || p.TrustDomain != "public" {
						t.Fatalf("%s: policy for %s names namespace %q, trust domain %q; the apps run in daca, public", id, p.AppID, p.Namespace, p.TrustDomain)
					}
				}
				// The LLM calls of chat turns are capped by the scheduler.
				if lim := cfg.Spec.Workflow.ActivityConcurrencyLimits; id == "chat-service" &&
					(len(lim) != 1 || lim[0].Name != "generate_response" || lim[0].MaxConcurrent < 1) {
					t.Fatalf("%s: workflow activityConcurrencyLimits %+v; want generate_response capped", id, lim)
				}
				scope := cfg.Spec.Secrets.Scopes[0]
				got, _ := json.Marshal(scope.AllowedSecrets)
				if scope.StoreName != "secretstore" || scope.DefaultAccess != "deny" || strings.ReplaceAll(string(got), ",", ", ") != want.secrets {
					t.Fatalf("%s: secret scope %+v; want %s", id, scope, want.secrets)
				}
				c := d.template.Spec.Containers[0]
				if c.Ports[0].ContainerPort != int32(atoi(want.port)) || env(c, "APP_PORT").Value != want.port || env(c, "APP_HOST").Value != "0.0.0.0" {
					t.Fatalf("%s: ports %v / APP_PORT", id, c.Ports)
				}
				if c.ReadinessProbe == nil || c.LivenessProbe == nil || c.ReadinessProbe.HTTPGet == nil {
					t.Fatalf("%s: probes missing", id)
				}
				if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
					t.Fatalf("%s: resource requests/limits missing", id)
				}
				if sc := d.template.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
					t.Fatalf("%s: not run as non-root", id)
				}
				// Every Secret it references exists (local) or is documented (production).
				refs := []string{a["dapr.io/api-token-secret"], a["dapr.io/app-token-secret"]}
				for _, e := range c.Env {
					if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
						refs = append(refs, e.ValueFrom.SecretKeyRef.Name)
					}
				}
				for _, s := range refs {
					checkSecret(t, r, overlay, s)
				}
				svc, ok := r.services[id]
				if !ok || svc.Spec.Ports[0].Port != int32(atoi(want.port)) || svc.Spec.Selector["app.kubernetes.io/name"] != id {
					t.Fatalf("%s: Service %+v", id, svc.Spec)
				}
			}
			// Production runs only trusted documents, from a manifest the
			// gateway reads from a ConfigMap it mounts.
			if gw := r.workloads["gateway"].template.Spec; overlay == "production" {
				c := gw.Containers[0]
				if e := env(c, "GRAPHQL_TRUSTED_DOCUMENTS"); e == nil || e.Value != "require" {
					t.Fatalf("gateway: GRAPHQL_TRUSTED_DOCUMENTS %v; want require", e)
				}
				m := env(c, "GRAPHQL_TRUSTED_MANIFESTS")
				if m == nil || len(c.VolumeMounts) != 1 || !strings.HasPrefix(m.Value, c.VolumeMounts[0].MountPath+"/") || len(gw.Volumes) != 1 || gw.Volumes[0].ConfigMap == nil {
					t.Fatalf("gateway: manifests %v, mounts %+v, volumes %+v", m, c.VolumeMounts, gw.Volumes)
				}
				cm, ok := r.configMaps[gw.Volumes[0].ConfigMap.Name]
				if !ok || !strings.Contains(cm.Data[filepath.Base(m.Value)], "apollo-persisted-query-manifest") {
					t.Fatalf("gateway: the manifest's ConfigMap %s: %+v", gw.Volumes[0].ConfigMap.Name, cm.Data)
				}
			}
			// Components, their scopes, the per-replica consumer group.
			wantScopes := map[string][]string{
				"statestore": {"chat-service", "tool-server", "agent-memory-service"}, "pubsub": {"chat-service", "agent-memory-service"},
				"gateway-pubsub": {"gateway"}, "stream-pubsub": {"chat-service"}, "gateway-state": {"gateway"}, "secretstore": {"chat-service", "tool-server", "agent-memory-service", "gateway"},
			}
			for name, scopes := range wantScopes {
				c, ok := r.components[name]
				if !ok || !slices.Equal(c.Scopes, scopes) {
					t.Fatalf("component %s scopes %v; want %v", name, c.Scopes, scopes)
				}
				for _, m := range c.Spec.Metadata {
					if m.SecretKeyRef != nil {
						checkSecret(t, r, overlay, m.SecretKeyRef.Name)
					}
				}
			}
			if r.components["secretstore"].Spec.Type != "secretstores.kubernetes" || r.components["statestore"].Spec.Type != "state.redis" {
				t.Fatal("component types")
			}
			if !hasMeta(r.components["statestore"], "actorStateStore", "true") || !hasMeta(r.components["gateway-pubsub"], "consumerID", "{namespace}-{podName}") {
				t.Fatal("statestore must be the actor store; gateway-pubsub needs a consumer group per pod")
			}
			// The gateway's pods keep their names, so its consumer groups are
			// reused across restarts and rollouts instead of piling up.
			if k := r.workloads["gateway"].kind; k != "StatefulSet" {
				t.Fatalf("gateway is a %s; want a StatefulSet (stable pod names for its consumer groups)", k)
			}
			// Only chat-service may drive its workflow (WorkflowAccessPolicy).
			if len(r.wfPolicies) != 1 || !slices.Equal(r.wfPolicies[0].Scopes, []string{"chat-service"}) || fmt.Sprint(r.wfPolicies[0].Spec["rules"]) != "[map[activities:[map[name:*]] callers:[map[appID:chat-service]] workflows:[map[name:* operations:[schedule terminate raise pause resume purge get rerun]]]]]" {
				t.Fatalf("workflow access policies %+v", r.wfPolicies)
			}
			// The tool server is chat-service's MCP server, as make run's
			// (components/mcpserver-tools.yaml), at its Service's address.
			if len(r.mcpServers) != 1 {
				t.Fatalf("%d MCPServers; want the tool server's", len(r.mcpServers))
			}
			checkMCPServer(t, r.mcpServers[0], "http://tool-server.daca.svc.cluster.local:8020/mcp", false)
			if len(r.subscriptions) != 1 || !slices.Equal(r.subscriptions[0].Scopes, []string{"agent-memory-service"}) ||
				r.subscriptions[0].Spec.Topic != "conversations" || r.subscriptions[0].Spec.Routes.Default != "/conversations" {
				t.Fatalf("subscription %+v", r.subscriptions)
			}
			// Gateway scaling.
			if len(r.hpas) != 1 || r.hpas[0].Spec.ScaleTargetRef.Name != "gateway" || r.hpas[0].Spec.ScaleTargetRef.Kind != "StatefulSet" {
				t.Fatal("the HPA must target the gateway")
			}
			// What make cluster proves (one replica of each app per host: a
			// host lost, a rolling restart): replicas spread over nodes, a
			// disruption budget for every app, three replicas in production.
			budgets := map[string]bool{}
			for _, p := range r.pdbs {
				budgets[p.Spec.Selector.MatchLabels["app.kubernetes.io/name"]] = true
			}
			for id := range apps {
				if !budgets[id] {
					t.Errorf("%s: no PodDisruptionBudget", id)
				}
				spread := r.workloads[id].template.Spec.TopologySpreadConstraints
				if len(spread) != 1 || spread[0].TopologyKey != "kubernetes.io/hostname" || spread[0].LabelSelector.MatchLabels["app.kubernetes.io/name"] != id {
					t.Errorf("%s: topology spread %+v; want its replicas spread over nodes", id, spread)
				}
				if n := r.workloads[id].replicas; overlay == "production" && (n == nil || *n < 3) {
					t.Errorf("%s: %v replicas in production; want 3 (make cluster's layout)", id, n)
				}
			}
			// Only the gateway is reachable from outside the namespace.
			deny := false
			for _, p := range r.policies {
				if len(p.Spec.PodSelector.MatchLabels) == 0 && len(p.Spec.Ingress) == 0 {
					deny = true
				}
				for _, in := range p.Spec.Ingress {
					if len(in.From) == 0 && p.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "gateway" {
						t.Fatalf("NetworkPolicy %s opens %v to everyone", p.Name, p.Spec.PodSelector)
					}
				}
			}
			if !deny {
				t.Fatal("no default-deny NetworkPolicy")
			}
			if overlay == "production" {
				if *r.hpas[0].Spec.MinReplicas != 3 || r.hpas[0].Spec.MaxReplicas != 20 {
					t.Fatalf("production HPA bounds %d..%d", *r.hpas[0].Spec.MinReplicas, r.hpas[0].Spec.MaxReplicas)
				}
				if env(r.workloads["gateway"].template.Spec.Containers[0], "AUTH_MODE").Value != "jwt" {
					t.Fatal("production gateway must use AUTH_MODE=jwt")
				}
				for _, name := range []string{"statestore", "gateway-state", "pubsub", "gateway-pubsub"} {
					if !strings.Contains(metaValue(r.components[name], "redisHost"), "svc.cluster.local") {
						t.Fatalf("production Redis host not set on %s", name)
					}
				}
			}
		})
	}
}

func checkSecret(t *testing.T, r rendered, overlay, name string) {
	t.Helper()
	documented := []string{"daca-dapr-api-token", "daca-app-api-token", "gemini-api-key", "gateway-jwt-secret", "tool-server-token", "redis"}
	if overlay == "local" {
		if _, ok := r.secrets[name]; !ok {
			t.Fatalf("Secret %s is referenced but not rendered", name)
		}
		return
	}
	if !slices.Contains(documented, name) {
		t.Fatalf("Secret %s is referenced but not documented for production", name)
	}
}

func hasMeta(c component, name, value string) bool { return metaValue(c, name) == value }

func metaValue(c component, name string) string {
	for _, m := range c.Spec.Metadata {
		if m.Name == name {
			s, _ := m.Value.(string)
			return s
		}
	}
	return ""
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// The Kubernetes Resiliency is the one `make run` uses: one source of truth.
func TestResiliencyMatchesComponents(t *testing.T) {
	read := func(p string) map[string]any {
		b, err := os.ReadFile(filepath.Join(root(t), p))
		if err != nil {
			t.Fatal(err)
		}
		var r wfPolicy // a Resiliency's fields and scopes
		if err := yaml.UnmarshalStrict(b, &r); err != nil {
			t.Fatal(err)
		}
		return r.Spec
	}
	if a, b := read("components/resiliency.yaml"), read("deploy/k8s/base/dapr/resiliency.yaml"); !reflect.DeepEqual(a, b) {
		t.Fatal("deploy/k8s/base/dapr/resiliency.yaml differs from components/resiliency.yaml; copy it over")
	}
	if a, b := read("components/workflowaccesspolicy.yaml"), read("deploy/k8s/base/dapr/workflowaccesspolicy.yaml"); !reflect.DeepEqual(a, b) {
		t.Fatal("deploy/k8s/base/dapr/workflowaccesspolicy.yaml differs from components/workflowaccesspolicy.yaml; copy it over")
	}
}

// checkMCPServer: an MCPServer of a deployment is components/mcpserver-tools.yaml
// (one source) but for its URL, the tool server's address there, and its
// ignoreErrors (Kubernetes': false, README Deploy).
func checkMCPServer(t *testing.T, got map[string]any, wantURL string, wantIgnoreErrors bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root(t), "components", "mcpserver-tools.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := yaml.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	url := func(m map[string]any) *any {
		h := m["spec"].(map[string]any)["endpoint"].(map[string]any)["streamableHTTP"].(map[string]any)
		v := h["url"]
		delete(h, "url")
		return &v
	}
	if u := *url(got); u != wantURL {
		t.Fatalf("MCPServer url %v; want %s", u, wantURL)
	}
	url(want)
	if ig := got["spec"].(map[string]any)["ignoreErrors"]; ig != wantIgnoreErrors {
		t.Fatalf("MCPServer ignoreErrors %v; want %v", ig, wantIgnoreErrors)
	}
	delete(got["spec"].(map[string]any), "ignoreErrors")
	delete(want["spec"].(map[string]any), "ignoreErrors")
	if md, ok := got["metadata"].(map[string]any); ok {
		delete(md, "namespace")
		delete(md, "labels")
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("MCPServer %v\ndiffers from components/mcpserver-tools.yaml %v (but for its url)", got, want)
	}
}
