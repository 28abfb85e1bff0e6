// A real go-plugin client (Debian's golang-github-hashicorp-go-plugin-dev)
// driving the wasmdock plugin binary the way a Nomad agent's plugin loader
// does: magic cookie, handshake, gRPC over the unix socket, health Ping,
// one BasePlugin call, then Kill (GRPCController.Shutdown, 2 s grace).
//
// Usage: go-plugin-client <plugin binary> [args...]
// Prints result lines for the Rust test to check; the client's own log
// (which re-emits the plugin's stderr lines it could parse) goes to stderr.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// basePlugin hands out the raw gRPC connection; no generated stubs needed.
type basePlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (basePlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }

func (basePlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (interface{}, error) {
	return conn, nil
}

// rawCodec sends and receives already-encoded protobuf bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func fail(step string, err error) {
	fmt.Printf("FAIL %s: %v\n", step, err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		fail("usage", fmt.Errorf("go-plugin-client <plugin binary> [args...]"))
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "client", Output: os.Stderr, Level: hclog.Trace, JSONFormat: true})
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  2,
			MagicCookieKey:   "NOMAD_PLUGIN_MAGIC_COOKIE",
			MagicCookieValue: "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255",
		},
		Plugins:          map[string]plugin.Plugin{"base": basePlugin{}},
		Cmd:              exec.Command(os.Args[1], os.Args[2:]...),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		StartTimeout:     time.Minute,
		Logger:           logger,
	})

	rpcClient, err := client.Client()
	if err != nil {
		fail("handshake", err)
	}
	fmt.Printf("PROTOCOL %s\n", client.Protocol())
	if err := rpcClient.Ping(); err != nil {
		fail("ping", err)
	}
	fmt.Println("PING ok")

	raw, err := rpcClient.Dispense("base")
	if err != nil {
		fail("dispense", err)
	}
	conn := raw.(*grpc.ClientConn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	request, response := []byte{}, []byte{}
	err = conn.Invoke(ctx, "/hashicorp.nomad.plugins.base.proto.BasePlugin/PluginInfo", &request, &response, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		fail("PluginInfo", err)
	}
	fmt.Printf("PLUGININFO %x\n", response)

	start := time.Now()
	client.Kill()
	fmt.Printf("KILLED exited=%v after=%dms\n", client.Exited(), time.Since(start).Milliseconds())
}
