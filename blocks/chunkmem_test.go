package blocks

import (
	"testing"
	"unsafe"
)

func TestChunkBufPool(t *testing.T) {
	var bufs [][]byte
	for i := 0; i < chunkPoolMax+3; i++ {
		b := getChunkBuf()
		if len(b) != chunkBufSize || cap(b) != chunkBufSize {
			t.Fatalf("buffer %d: len %d cap %d, want %d", i, len(b), cap(b), chunkBufSize)
		}
		if a := uintptr(unsafe.Pointer(&b[0])); a%DirectAlign != 0 {
			t.Fatalf("buffer %d at %#x is not aligned for direct I/O", i, a)
		}
		b[0], b[len(b)-1] = 1, 2 // writable end to end
		bufs = append(bufs, b)
	}
	chunkPool.mu.Lock()
	mapped := len(chunkPool.mapped)
	chunkPool.mu.Unlock()
	if mapped == 0 {
		t.Log("no buffer was mapped (mmap failed?): they are heap memory")
	}
	for _, b := range bufs {
		putChunkBuf(b[:100]) // a chunk may hold a shorter slice
	}
	chunkPool.mu.Lock()
	free, after := len(chunkPool.free), len(chunkPool.mapped)
	chunkPool.mu.Unlock()
	if free > chunkPoolMax {
		t.Fatalf("pool holds %d buffers, at most %d", free, chunkPoolMax)
	}
	if mapped > 0 && after >= mapped {
		t.Fatalf("buffers beyond the pool's %d were not unmapped: %d mappings before, %d after", chunkPoolMax, mapped, after)
	}
	// A reused buffer comes back whole.
	b := getChunkBuf()
	if len(b) != chunkBufSize {
		t.Fatalf("reused buffer has %d bytes", len(b))
	}
	putChunkBuf(b)
}
