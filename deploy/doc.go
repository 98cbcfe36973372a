// Package deploy holds the checks of docker-compose.yml and the Kubernetes
// manifests in deploy/k8s (see compose_test.go and k8s_test.go).
package deploy
