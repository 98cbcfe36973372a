// Package contract is what travels between the apps, defined once: app ids,
// the Dapr component, topic and secret names they share, the pub/sub events
// and their CloudEvent envelope, the JSON of the services' APIs that another
// app reads (profiles, history, sessions, chat runs), id rules and limits.
//
// Every app (chat-service, agent-memory-service, the gateway) and the
// launcher use this package; none of them imports another app's code.
// Changing a name or a shape here changes the wire between the apps: keep
// it compatible with the tutorial's published API (README, "API").
package contract

// App ids (Dapr --app-id).
const (
	ChatApp    = "chat-service"
	MemoryApp  = "agent-memory-service"
	GatewayApp = "gateway"
	// ToolApp is the reference tool server: an MCP server (services/tools)
	// that chat-service's sidecar calls through Dapr's MCP workflows.
	ToolApp = "tool-server"
)

// SessionActor is the Dapr actor type chat-service hosts, one actor per
// session (its id): it runs the session's turns one at a time, in the
// order it accepted them, across every chat-service replica.
const SessionActor = "chat-session"

// MCP: the reference tool server as chat-service's sidecar knows it.
const (
	// ToolServer is the name of its MCPServer resource
	// (components/mcpserver-tools.yaml): its tools are the workflows
	// dapr.internal.mcp.tools.CallTool.<tool>.
	ToolServer = "tools"
	// ToolPath is where it serves MCP (streamable HTTP).
	ToolPath = "/mcp"
	// ToolTokenHeader carries SecretToolToken on every MCP request.
	ToolTokenHeader = "X-Tool-Token"
	// ToolUserArg is the argument in which chat-service passes the turn's
	// user to a tool that acts for a user: set by chat-service, never taken
	// from the model's arguments.
	ToolUserArg = "_user_id"
	// ToolCallArg is the argument in which chat-service passes the call's
	// id to a tool that takes it: the same for every attempt of one call
	// (the turn, its round and the call's place), so a tool can make a
	// repeated attempt harmless.
	ToolCallArg = "_call_id"
)

// Dapr components (components/*.yaml) the apps name in code.
const (
	// PubSub is the services' pub/sub component: one consumer group per app id.
	PubSub = "pubsub"
	// GatewayPubSub is the gateway's own component on the same streams, with
	// a consumer group per replica (consumerID), so every replica receives
	// every event.
	GatewayPubSub = "gateway-pubsub"
	// StreamPubSub is chat-service's component for the pieces of replies
	// (TopicChatStream): the same broker, but pieces are short-lived and
	// best effort — a small cap on Redis, transient messages without
	// publisher confirms on RabbitMQ — so they never slow the turn nor
	// crowd the events that must not be lost.
	StreamPubSub = "stream-pubsub"
	// StateStore holds profiles and history; it is also the workflow store.
	StateStore = "statestore"
	// GatewayStateStore is the gateway's own state store (the shared
	// chat-turn limit).
	GatewayStateStore = "gateway-state"
	// SecretStore is the secret store; each app may read only its own keys
	// (components/config.yaml).
	SecretStore = "secretstore"
)

// Secret-store keys.
const (
	// SecretLLMKey is the Gemini API key (empty: the offline model). It lives
	// only in the secret store, never in the environment.
	SecretLLMKey = "gemini-api-key"
	// SecretJWT is the gateway's HS256 signing secret (AUTH_MODE=jwt).
	SecretJWT = "gateway-jwt-secret"
	// SecretToolToken is the bearer token chat-service's sidecar sends the
	// tool server (the MCPServer resource's header) and the tool server
	// checks: only who holds it may call the tools.
	SecretToolToken = "tool-server-token"
)

// Topics.
const (
	// TopicConversations carries ConversationUpdated (chat-service →
	// agent-memory-service and the gateway).
	TopicConversations = "conversations"
	// TopicMemoryUpdates carries MemoryUpdated (agent-memory-service → the
	// gateway).
	TopicMemoryUpdates = "memory-updates"
	// TopicChatStream carries ChatStreamed: the pieces of a reply as the
	// model writes it (chat-service → the gateway).
	TopicChatStream = "chat-stream"
	// TopicApprovals carries Approval: a tool call that waits for a user's
	// decision, and each change of it (chat-service → the gateway).
	TopicApprovals = "approvals"
)

// Topics lists every topic, in a fixed order.
var Topics = []string{TopicConversations, TopicMemoryUpdates, TopicChatStream, TopicApprovals}
