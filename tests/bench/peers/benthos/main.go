// Benthos v4.27.0 (MIT) as the bench's peer (tests/bench/README.md, "A peer: Benthos"),
// with only the components its pipeline uses. tests/bench/peer.py builds it once from the
// Go module proxy into .cache/bench/ and runs it on a generated configuration.
package main

import (
	"context"

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
	service.RunCLI(context.Background())
}
