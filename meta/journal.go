package meta

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// The fsync journal ("J" keys, docs/format.md "Fsync journal"): an fsync
// of a volume whose tree holds nothing uncommitted but its times writes
// the volume's blocks cached since its last record as one synced record,
// instead of writing them to the log and committing the trees (two device
// flushes). A commit whose trees hold every block of a record deletes the
// record in its batch; at mount the records left are applied in order.

// JournalRecordVersion is the version byte of a journal record's value.
const JournalRecordVersion = 1

// JournalRecord is one fsync's blocks of one volume.
type JournalRecord struct {
	Ino, Seq uint64 // the volume; the record's number, from 1, per volume per mount
	Mtime    int64  // the volume's times when it was written
	Ctime    int64
	Runs     []JournalRun
}

// JournalRun is Len/blockSize consecutive blocks from First on.
type JournalRun struct {
	First uint64
	Data  []byte // whole blocks
}

const journalBlock = 4096

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func journalKey(ino, seq uint64) []byte {
	k := make([]byte, 17)
	k[0] = pfxJournal
	binary.BigEndian.PutUint64(k[1:], ino)
	binary.BigEndian.PutUint64(k[9:], seq)
	return k
}

// EncodeJournal encodes a record's value: version, mtime and ctime (varints), the
// number of runs (uvarint), each run's first block and block count
// (uvarints) and blocks, then the crc32c of everything before it (4 bytes,
// big endian).
func EncodeJournal(r *JournalRecord) []byte {
	n := 1 + binary.MaxVarintLen64*2
	for _, run := range r.Runs {
		n += 2*binary.MaxVarintLen64 + len(run.Data)
	}
	b := make([]byte, 0, n+4)
	b = append(b, JournalRecordVersion)
	b = binary.AppendVarint(b, r.Mtime)
	b = binary.AppendVarint(b, r.Ctime)
	b = binary.AppendUvarint(b, uint64(len(r.Runs)))
	for _, run := range r.Runs {
		b = binary.AppendUvarint(b, run.First)
		b = binary.AppendUvarint(b, uint64(len(run.Data)/journalBlock))
		b = append(b, run.Data...)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// DecodeJournal decodes a record's value (Ino and Seq are the caller's,
// from the key). Data aliases v.
func DecodeJournal(v []byte, r *JournalRecord) error {
	bad := func(what string) error { return fmt.Errorf("%w: journal record: %s", ErrCorrupt, what) }
	if len(v) < 5 {
		return bad("short")
	}
	body := v[:len(v)-4]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(v[len(v)-4:]) {
		return bad("checksum mismatch (crc32c)")
	}
	if body[0] != JournalRecordVersion {
		return bad(fmt.Sprintf("version %d, this vafs reads %d", body[0], JournalRecordVersion))
	}
	p := body[1:]
	mtime, k := binary.Varint(p)
	if k <= 0 {
		return bad("mtime")
	}
	p = p[k:]
	ctime, k := binary.Varint(p)
	if k <= 0 {
		return bad("ctime")
	}
	p = p[k:]
	nruns, k := binary.Uvarint(p)
	if k <= 0 || nruns > uint64(len(p)) {
		return bad("run count")
	}
	p = p[k:]
	r.Mtime, r.Ctime, r.Runs = mtime, ctime, make([]JournalRun, 0, nruns)
	for range nruns {
		first, k := binary.Uvarint(p)
		if k <= 0 || first >= MaxBlocks {
			return bad("first block")
		}
		p = p[k:]
		n, k := binary.Uvarint(p)
		if k <= 0 || n == 0 || n > uint64(len(p[k:]))/journalBlock || first+n > MaxBlocks {
			return bad("block count")
		}
		p = p[k:]
		r.Runs = append(r.Runs, JournalRun{First: first, Data: p[:n*journalBlock]})
		p = p[n*journalBlock:]
	}
	if len(p) != 0 {
		return bad("trailing bytes")
	}
	return nil
}

// PutJournal writes a record durably (one synced batch: Pebble's WAL is
// ordered, so every batch applied before it is durable too).
func (d *DB) PutJournal(r *JournalRecord) error {
	b := d.NewBatch()
	if err := b.b.Set(journalKey(r.Ino, r.Seq), EncodeJournal(r), nil); err != nil {
		b.Close()
		return fmt.Errorf("meta: journal: %w", err)
	}
	return b.Commit(true)
}

// DelJournal deletes a record in b.
func (b *Batch) DelJournal(ino, seq uint64) { b.b.Delete(journalKey(ino, seq), nil) }

// Journal calls fn with every record, by volume, then number.
func (d *DB) Journal(fn func(r *JournalRecord) error) error {
	var ferr error
	err := d.scan([]byte{pfxJournal}, func(k, v []byte) bool {
		if len(k) != 17 {
			ferr = fmt.Errorf("%w: journal key of %d bytes", ErrCorrupt, len(k))
			return false
		}
		r := &JournalRecord{Ino: binary.BigEndian.Uint64(k[1:]), Seq: binary.BigEndian.Uint64(k[9:])}
		if err := DecodeJournal(append([]byte(nil), v...), r); err != nil {
			ferr = fmt.Errorf("volume %d record %d: %w", r.Ino, r.Seq, err)
			return false
		}
		ferr = fn(r)
		return ferr == nil
	})
	if err != nil {
		return err
	}
	return ferr
}
