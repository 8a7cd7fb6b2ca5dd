// Benthos v4.27.0 (MIT) as the bench's peer (tests/bench/README.md, "A peer: Benthos"),
// with only the components its pipeline uses. tests/bench/peer.py builds it once from the
// Go module proxy into .cache/bench/ and runs it on a generated configuration.
package main

import (
	"context"
	"net/http"
	"os"
	"strconv"

	"github.com/benthosdev/benthos/v4/public/service"

	// the http_client output
	_ "github.com/benthosdev/benthos/v4/public/components/io"
	// the kafka_franz input
	_ "github.com/benthosdev/benthos/v4/public/components/kafka"
	// /metrics in Prometheus' format, Benthos' default metrics (hookrelay keeps its own too)
	_ "github.com/benthosdev/benthos/v4/public/components/prometheus"
	// the broker output, bloblang mappings
	_ "github.com/benthosdev/benthos/v4/public/components/pure"
)

func main() {
	// The bench's keep-alive variant. http_client uses Go's default transport, which keeps 2
	// idle connections per host: at 64 requests in flight to one host most requests open a
	// new connection, and no Benthos option changes that.
	if n, err := strconv.Atoi(os.Getenv("BENCH_MAX_IDLE_CONNS_PER_HOST")); err == nil && n > 0 {
		transport := http.DefaultTransport.(*http.Transport)
		transport.MaxIdleConnsPerHost = n
		transport.MaxIdleConns = max(transport.MaxIdleConns, n)
	}
	service.RunCLI(context.Background())
}
