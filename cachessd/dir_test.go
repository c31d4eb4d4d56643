package cachessd

import (
	"testing"

	"github.com/vafs/vafs/blocks"
	"github.com/vafs/vafs/blocks/storetest"
)

func TestDirConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) blocks.Store {
		d, err := OpenDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}
