// Command go-verdicts reads mxgate's verdict stream (mxgate.scanned.v1) and prints one JSON
// line per decision, sharing no code with mxgate: it needs only the .avsc files of
// schemas/avro/ (and history/), an Avro library (hamba/avro) and a Kafka client (franz-go).
//
//	go-verdicts --bootstrap 127.0.0.1:9092 [--topic-prefix P] [--schemas DIR]
//	            [--from-beginning] [--max N] [--group G]
//	go-verdicts --list-schemas [--schemas DIR]
//
// The options and the output lines are those of examples/consume_verdicts.py (Go's flag
// package takes -name and --name alike). Without --group nothing is committed: each run
// starts at the end of the topic, or at its start with --from-beginning. With --group the
// group's offsets are resumed and only printed decisions are committed.
//
// Each Kafka value is Avro single-object encoding: C3 01, the 8-byte little-endian
// CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the Avro
// binary body. The program fingerprints every .avsc it holds, picks the writer schema by
// the fingerprint on the wire, and resolves it against the MessageScanned it was built for
// (Avro schema resolution), so events written with an older or newer schema still decode.
package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	// scannedTopic is the verdict stream's name in the catalog; a deployment may prefix it.
	scannedTopic = "mxgate.scanned.v1"
	// readerName is the record this consumer is built to read.
	readerName = "mxgate.events.MessageScanned"
)

// magic opens every single-object encoded value.
var magic = []byte{0xC3, 0x01}

// engineVerdict holds the EngineVerdict fields this consumer prints; the decoder skips the rest.
type engineVerdict struct {
	Engine  string  `avro:"engine" json:"engine"`
	Kind    string  `avro:"kind" json:"kind"`
	Outcome string  `avro:"outcome" json:"outcome"`
	Score   float64 `avro:"score" json:"score"`
	Shadow  bool    `avro:"shadow" json:"shadow"`
}

// messageScanned holds the MessageScanned fields this consumer prints.
type messageScanned struct {
	MessageID     string          `avro:"message_id"`
	Tenant        string          `avro:"tenant"`
	ScannedAt     time.Time       `avro:"scanned_at"`
	Action        string          `avro:"action"`
	Reasons       []string        `avro:"reasons"`
	SpamScore     float64         `avro:"spam_score"`
	PolicyVersion string          `avro:"policy_version"`
	Verdicts      []engineVerdict `avro:"verdicts"`
}

// decision is one output line; the Python example (consume_verdicts.py) prints the same keys.
type decision struct {
	MessageID     string          `json:"message_id"`
	Tenant        string          `json:"tenant"`
	ScannedAt     string          `json:"scanned_at"`
	Action        string          `json:"action"`
	Reasons       []string        `json:"reasons"`
	SpamScore     float64         `json:"spam_score"`
	PolicyVersion string          `json:"policy_version"`
	Verdicts      []engineVerdict `json:"verdicts"`
	WriterSchema  string          `json:"writer_schema"`
	Partition     int32           `json:"partition"`
	Offset        int64           `json:"offset"`
}

// writerSchema is one schema file we hold, under the fingerprint that names it on the wire.
type writerSchema struct {
	name   string
	file   string
	schema avro.Schema
}

// fingerprint is the single-object fingerprint of a schema file: CRC-64-AVRO of its Parsing
// Canonical Form, little-endian as on the wire. pcf must be parsed from stripLogicalTypes'
// output: hamba/avro keeps "logicalType" in the canonical form it fingerprints, which the
// Avro specification strips ([STRIP]), so the schema as written would fingerprint
// differently from every other implementation (fastavro, Java) whenever a field is a
// timestamp.
func fingerprint(pcf avro.Schema) ([8]byte, error) {
	var fp [8]byte
	b, err := pcf.FingerprintUsing(avro.CRC64AvroLE)
	if err != nil {
		return fp, err
	}
	copy(fp[:], b)
	return fp, nil
}

// stripLogicalTypes returns the schema JSON without its "logicalType" attributes: the
// underlying Avro types, which is all the Parsing Canonical Form keeps of them.
func stripLogicalTypes(data []byte) ([]byte, error) {
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			delete(t, "logicalType")
			for _, x := range t {
				walk(x)
			}
		case []any:
			for _, x := range t {
				walk(x)
			}
		}
	}
	walk(doc)
	return json.Marshal(doc)
}

// parsed is one schema file parsed twice: as written (to decode, logical types and all) and
// without logical types (to fingerprint).
type parsed struct {
	schema avro.Schema
	fp     [8]byte
}

// parseFile parses data into cache (as written) and pcfCache (logical types stripped); both
// caches collect the named types later files may reference.
func parseFile(data []byte, cache, pcfCache *avro.SchemaCache) (parsed, error) {
	s, err := avro.ParseBytesWithCache(data, "", cache)
	if err != nil {
		return parsed{}, err
	}
	bare, err := stripLogicalTypes(data)
	if err != nil {
		return parsed{}, err
	}
	pcf, err := avro.ParseBytesWithCache(bare, "", pcfCache)
	if err != nil {
		return parsed{}, err
	}
	fp, err := fingerprint(pcf)
	return parsed{schema: s, fp: fp}, err
}

// fullName is the full name of a named schema ("" for unnamed ones).
func fullName(s avro.Schema) string {
	if n, ok := s.(avro.NamedSchema); ok {
		return n.FullName()
	}
	return ""
}

// loadCurrent parses every .avsc directly in dir into one cache. The files reference each
// other's named types (MessageScanned uses EngineVerdict) and their order is not known, so
// files whose references are still missing are retried until a pass makes no progress.
func loadCurrent(dir string) (map[[8]byte]writerSchema, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.avsc"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no .avsc files in %s", dir)
	}
	sort.Strings(paths)
	cache, pcfCache := &avro.SchemaCache{}, &avro.SchemaCache{}
	out := map[[8]byte]writerSchema{}
	pending := paths
	for len(pending) > 0 {
		var retry []string
		var lastErr error
		for _, path := range pending {
			data, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			p, err := parseFile(data, cache, pcfCache)
			if err != nil {
				retry, lastErr = append(retry, path), fmt.Errorf("%s: %w", path, err)
				continue
			}
			out[p.fp] = writerSchema{name: fullName(p.schema), file: path, schema: p.schema}
		}
		if len(retry) == len(pending) {
			return nil, lastErr // no progress: a real parse error or a missing type
		}
		pending = retry
	}
	return out, nil
}

// loadHistory parses dir/history/<full name>.<fingerprint hex>.avsc. Each file is
// self-contained and reuses the current names (an older EngineVerdict), so each gets a cache
// of its own. The fingerprint in the file name must match the one computed here: a mismatch
// means this library's canonical form differs from the writer's, and decoding would be wrong.
func loadHistory(dir string) (map[[8]byte]writerSchema, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "history", "*.avsc"))
	if err != nil {
		return nil, err
	}
	out := map[[8]byte]writerSchema{}
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		p, err := parseFile(data, &avro.SchemaCache{}, &avro.SchemaCache{})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		fp := p.fp
		base := strings.TrimSuffix(filepath.Base(path), ".avsc")
		if want := base[strings.LastIndex(base, ".")+1:]; want != hex.EncodeToString(fp[:]) {
			return nil, fmt.Errorf("%s: computed fingerprint %x, file name says %s", path, fp, want)
		}
		out[fp] = writerSchema{name: fullName(p.schema), file: path, schema: p.schema}
	}
	return out, nil
}

// decoder turns single-object encoded values into MessageScanned records.
type decoder struct {
	writers  map[[8]byte]writerSchema
	reader   avro.Schema
	resolved map[[8]byte]avro.Schema // writer resolved against reader, built once per writer
}

func newDecoder(dir string) (*decoder, error) {
	current, err := loadCurrent(dir)
	if err != nil {
		return nil, err
	}
	old, err := loadHistory(dir)
	if err != nil {
		return nil, err
	}
	d := &decoder{writers: old, resolved: map[[8]byte]avro.Schema{}}
	for fp, w := range current { // the current files win should a history file repeat one
		d.writers[fp] = w
		if w.name == readerName {
			d.reader = w.schema
		}
	}
	if d.reader == nil {
		return nil, fmt.Errorf("no %s.avsc in %s", readerName, dir)
	}
	return d, nil
}

// decode reads one Kafka value; it returns the record and the writer's fingerprint.
func (d *decoder) decode(value []byte) (messageScanned, [8]byte, error) {
	var rec messageScanned
	var fp [8]byte
	if len(value) < 10 || !bytes.Equal(value[:2], magic) {
		return rec, fp, errors.New("not Avro single-object encoding (no C3 01 marker)")
	}
	copy(fp[:], value[2:10])
	w, ok := d.writers[fp]
	if !ok {
		return rec, fp, fmt.Errorf("unknown writer schema %x: a newer schema was published; "+
			"update your copy of schemas/avro", fp)
	}
	if w.name != readerName {
		return rec, fp, fmt.Errorf("writer schema %x is %s, not %s", fp, w.name, readerName)
	}
	s, ok := d.resolved[fp]
	if !ok {
		var err error
		// Resolution fills fields the writer lacked with the reader's defaults (an older
		// event has no EngineVerdict.shadow) and drops fields the reader does not know.
		s, err = avro.NewSchemaCompatibility().Resolve(d.reader, w.schema)
		if err != nil {
			return rec, fp, fmt.Errorf("cannot resolve %s against our %s: %w", w.file, readerName, err)
		}
		d.resolved[fp] = s
	}
	err := avro.Unmarshal(s, value[10:], &rec)
	return rec, fp, err
}

func main() {
	bootstrap := flag.String("bootstrap", "", "Kafka bootstrap servers, host:port[,host:port] (required)")
	prefix := flag.String("topic-prefix", "", "the deployment's topic prefix (MXGATE_KAFKA__TOPIC_PREFIX); production uses none")
	schemaDir := flag.String("schemas", "schemas/avro", "folder of .avsc files (with history/)")
	fromBeginning := flag.Bool("from-beginning", false, "start at the oldest retained decision instead of new ones only")
	maxN := flag.Int("max", 0, "exit after printing N decisions (0: run until interrupted)")
	group := flag.String("group", "", "consumer group: resume from and commit its offsets (default: none, nothing is committed)")
	list := flag.Bool("list-schemas", false, "print the fingerprint and file of every schema held, then exit")
	flag.Parse()
	if *list {
		if err := listSchemas(*schemaDir); err != nil {
			fmt.Fprintln(os.Stderr, "go-verdicts:", err)
			os.Exit(1)
		}
		return
	}
	if *bootstrap == "" || *maxN < 0 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*bootstrap, *prefix+scannedTopic, *schemaDir, *fromBeginning, *maxN, *group); err != nil {
		fmt.Fprintln(os.Stderr, "go-verdicts:", err)
		os.Exit(1)
	}
}

// listSchemas prints "<fingerprint hex> <full name> <file>" for every schema file held, so a
// data team can check its copy against the fingerprints the producers publish.
func listSchemas(dir string) error {
	dec, err := newDecoder(dir)
	if err != nil {
		return err
	}
	lines := make([]string, 0, len(dec.writers))
	for fp, w := range dec.writers {
		lines = append(lines, fmt.Sprintf("%x %s %s", fp, w.name, filepath.Base(w.file)))
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	return nil
}

func run(bootstrap, topic, schemaDir string, fromBeginning bool, maxN int, group string) error {
	dec, err := newDecoder(schemaDir)
	if err != nil {
		return err
	}
	reset := kgo.NewOffset().AtEnd()
	if fromBeginning {
		reset = kgo.NewOffset().AtStart()
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(bootstrap, ",")...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(reset),
		// The scanner writes in transactions: read only committed decisions, so each
		// received message shows exactly one.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}
	if group != "" {
		// Commit only what was printed, so a restart neither skips nor repeats a decision
		// (-max may stop in the middle of a fetched batch).
		opts = append(opts, kgo.ConsumerGroup(group), kgo.AutoCommitMarks())
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := json.NewEncoder(os.Stdout)
	printed := 0
	for maxN == 0 || printed < maxN {
		limit := -1
		if maxN > 0 {
			limit = maxN - printed
		}
		fetches := cl.PollRecords(ctx, limit)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			break
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			return fmt.Errorf("fetching %s[%d]: %w", errs[0].Topic, errs[0].Partition, errs[0].Err)
		}
		for _, r := range fetches.Records() {
			rec, fp, err := dec.decode(r.Value)
			if err != nil {
				return fmt.Errorf("%s[%d]@%d: %w", r.Topic, r.Partition, r.Offset, err)
			}
			if err := out.Encode(decision{
				MessageID:     rec.MessageID,
				Tenant:        rec.Tenant,
				ScannedAt:     rec.ScannedAt.UTC().Format("2006-01-02T15:04:05.000000Z"),
				Action:        rec.Action,
				Reasons:       nonNil(rec.Reasons),
				SpamScore:     rec.SpamScore,
				PolicyVersion: rec.PolicyVersion,
				Verdicts:      nonNilVerdicts(rec.Verdicts),
				WriterSchema:  hex.EncodeToString(fp[:]),
				Partition:     r.Partition,
				Offset:        r.Offset,
			}); err != nil {
				return err
			}
			printed++
			if group != "" {
				cl.MarkCommitRecords(r)
			}
		}
	}
	if group != "" {
		// A fresh context: an interrupt must not stop the final commit of what was printed.
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := cl.CommitMarkedOffsets(cctx); err != nil {
			return fmt.Errorf("committing offsets: %w", err)
		}
	}
	return nil
}

// nonNil keeps empty lists as [] rather than null in the JSON, as Python prints them.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNilVerdicts(v []engineVerdict) []engineVerdict {
	if v == nil {
		return []engineVerdict{}
	}
	return v
}
