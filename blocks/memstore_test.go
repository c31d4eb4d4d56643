package blocks_test

import (
	"testing"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/blocks/storetest"
)

func TestMemStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) blocks.Store { return blocks.NewMemStore() })
}
