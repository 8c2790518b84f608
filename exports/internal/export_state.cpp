#include "exports/internal/export_state.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <utility>

#include "base/digest.h"
#include "base/log.h"
#include "exports/internal/state_codec.h"

namespace lifeboat::exports::internal {

using syncproto::EntryKind;
using syncproto::FileEntry;
using syncproto::ImageInfo;
using syncproto::InstanceInfo;
using syncproto::InstanceWarning;

namespace {

constexpr std::string_view kStateMagic = "LBEXPST5";  // LBEXPST4 with a base id (and a log)
// Instances with their warnings, no base id: loads, and the first save writes a new base.
constexpr std::string_view kStateMagicNoBaseId = "LBEXPST4";
// Instances without warnings: read as having none (a scan that finds some
// serves them as a change of the instance).
constexpr std::string_view kStateMagicNoWarnings = "LBEXPST3";
// Entries without SHA-256: read, every file marked racy (hashed again by the
// next scan, which serves them changed in the same lineage: no peer sees a
// rollback). An older state (LBEXPST1, no owners) starts a new lineage.
constexpr std::string_view kStateMagicNoSha = "LBEXPST2";

// A log record: kRecordMagic, u64 base id, u32 payload length, u32 header
// check (the first 4 bytes of the XXH3-128 of the 16 bytes before it), the
// payload, XXH3-128 of everything before it.
constexpr std::string_view kRecordMagic = "LBXR";
constexpr size_t kRecordHeader = 20;
constexpr size_t kRecordTrailer = 16;

// ---- Encoding ----------------------------------------------------------------

void EncodeStrings(Encoder& e, const std::vector<std::string>& v) {
  e.U32(static_cast<uint32_t>(v.size()));
  for (const auto& s : v) e.Str(s);
}

bool DecodeStrings(Decoder& d, std::vector<std::string>* v) {
  uint32_t n;
  if (!d.U32(&n)) return false;
  v->resize(n);
  for (auto& s : *v) {
    if (!d.Str(&s)) return false;
  }
  return true;
}

bool DecodeWarnings(Decoder& d, std::vector<InstanceWarning>* v) {
  uint32_t n;
  if (!d.U32(&n) || n > syncproto::kMaxInstanceWarnings) return false;
  v->resize(n);
  for (InstanceWarning& w : *v) {
    if (!d.Str(&w.path) || !d.Str(&w.reason)) return false;
  }
  return true;
}

void EncodeJournalEntry(Encoder& e, const JournalEntry& j) {
  e.U64(j.generation);
  EncodeStrings(e, j.added);
  EncodeStrings(e, j.changed);
  EncodeStrings(e, j.removed);
}

bool DecodeJournalEntry(Decoder& d, std::shared_ptr<const JournalEntry>* out) {
  auto j = std::make_shared<JournalEntry>();
  if (!d.U64(&j->generation) || !DecodeStrings(d, &j->added) || !DecodeStrings(d, &j->changed) ||
      !DecodeStrings(d, &j->removed)) {
    return false;
  }
  *out = std::move(j);
  return true;
}

void EncodeInstances(Encoder& e, const std::vector<InstanceInfo>& v) {
  e.U32(static_cast<uint32_t>(v.size()));
  for (const InstanceInfo& i : v) {
    e.Str(i.uuid);
    e.Str(i.alias);
    e.Str(i.service);
    e.Str(i.image_uuid);
    e.U32(static_cast<uint32_t>(i.warnings.size()));
    for (const InstanceWarning& w : i.warnings) {
      e.Str(w.path);
      e.Str(w.reason);
    }
  }
}

bool DecodeInstances(Decoder& d, bool has_warnings, std::vector<InstanceInfo>* v) {
  uint32_t n;
  if (!d.U32(&n)) return false;
  v->resize(n);
  for (InstanceInfo& i : *v) {
    if (!d.Str(&i.uuid) || !d.Str(&i.alias) || !d.Str(&i.service) || !d.Str(&i.image_uuid) ||
        (has_warnings && !DecodeWarnings(d, &i.warnings))) {
      return false;
    }
  }
  return true;
}

void EncodeImages(Encoder& e, const std::vector<ImageInfo>& v) {
  e.U32(static_cast<uint32_t>(v.size()));
  for (const ImageInfo& i : v) {
    e.Str(i.uuid);
    e.Str(i.origin);
  }
}

bool DecodeImages(Decoder& d, std::vector<ImageInfo>* v) {
  uint32_t n;
  if (!d.U32(&n)) return false;
  v->resize(n);
  for (ImageInfo& i : *v) {
    if (!d.Str(&i.uuid) || !d.Str(&i.origin)) return false;
  }
  return true;
}

void EncodeEntry(Encoder& e, const CacheEntry& c) {
  const Parsed& p = c.meta();
  e.Str(c.path);
  e.U8(static_cast<uint8_t>(c.kind));
  e.U64(c.size);
  e.U32(c.mode);
  e.I64(c.mtime_ns);
  e.Dig(c.digest);
  e.Dig(c.sha256);
  e.Str(c.target);
  e.U32(c.uid);
  e.U32(c.gid);
  e.Str(c.hardlink_of);
  e.U64(c.dev);
  e.U64(c.ino);
  e.I64(c.ctime_ns);
  e.U8(static_cast<uint8_t>((c.racy ? 1 : 0) | (c.exported ? 2 : 0)));
  e.U8(static_cast<uint8_t>(c.parse));
  e.Str(p.error);
  e.Str(p.uuid);
  e.Str(p.alias);
  e.Str(p.service);
  e.Str(p.image_uuid);
  e.Str(p.origin);
}

bool DecodeEntry(Decoder& d, bool has_sha, CacheEntry* out) {
  CacheEntry c;
  Parsed p;
  uint8_t kind, flags, parse;
  if (!d.Str(&c.path) || !d.U8(&kind) || !d.U64(&c.size) || !d.U32(&c.mode) ||
      !d.I64(&c.mtime_ns) || !d.Dig(&c.digest) || (has_sha && !d.Dig(&c.sha256)) ||
      !d.Str(&c.target) || !d.U32(&c.uid) || !d.U32(&c.gid) || !d.Str(&c.hardlink_of) ||
      !d.U64(&c.dev) || !d.U64(&c.ino) || !d.I64(&c.ctime_ns) || !d.U8(&flags) || !d.U8(&parse) ||
      !d.Str(&p.error) || !d.Str(&p.uuid) || !d.Str(&p.alias) || !d.Str(&p.service) ||
      !d.Str(&p.image_uuid) || !d.Str(&p.origin)) {
    return false;
  }
  if (kind < 1 || kind > 3 || parse > 2) return false;
  c.kind = static_cast<EntryKind>(kind);
  c.racy = (flags & 1) || (!has_sha && c.kind == EntryKind::kFile);
  c.exported = flags & 2;
  c.parse = static_cast<ParseAs>(parse);
  if (c.parse != ParseAs::kNone || !(p == NoParse())) {
    c.parsed = std::make_shared<const Parsed>(std::move(p));
  }
  *out = std::move(c);
  return true;
}

uint64_t LoadU64(std::string_view s) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(s[i])) << (8 * i);
  return v;
}

uint32_t LoadU32(std::string_view s) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(s[i])) << (8 * i);
  return v;
}

uint64_t NewBaseId() {
  for (;;) {
    const uint64_t id = std::stoull(RandomHex().substr(0, 16), nullptr, 16);
    if (id != 0) return id;
  }
}

// ---- Log records -------------------------------------------------------------

// One record's delta, decoded whole before any of it is applied.
struct Delta {
  uint64_t generation = 0;
  uint32_t journal_keep = 0;
  std::vector<std::shared_ptr<const JournalEntry>> journal_added;
  std::optional<std::vector<InstanceInfo>> instances;
  std::optional<std::vector<ImageInfo>> images;
  std::vector<CacheEntry> upserts;
  std::vector<std::string> removes;
};

enum RecordFlags : uint8_t { kHasInstances = 1, kHasImages = 2 };

bool DecodeDelta(std::string_view payload, Delta* delta) {
  Decoder d(payload);
  uint32_t n;
  uint8_t flags;
  if (!d.U64(&delta->generation) || !d.U32(&delta->journal_keep) || !d.U32(&n)) return false;
  delta->journal_added.resize(n);
  for (auto& j : delta->journal_added) {
    if (!DecodeJournalEntry(d, &j)) return false;
  }
  if (!d.U8(&flags) || flags > (kHasInstances | kHasImages)) return false;
  if (flags & kHasInstances) {
    delta->instances.emplace();
    if (!DecodeInstances(d, /*has_warnings=*/true, &*delta->instances)) return false;
  }
  if (flags & kHasImages) {
    delta->images.emplace();
    if (!DecodeImages(d, &*delta->images)) return false;
  }
  if (!d.U32(&n)) return false;
  delta->upserts.reserve(std::min<uint32_t>(n, 1u << 16));
  for (uint32_t k = 0; k < n; ++k) {
    if (!DecodeEntry(d, /*has_sha=*/true, &delta->upserts.emplace_back())) return false;
  }
  return DecodeStrings(d, &delta->removes) && d.done();
}

enum class Frame { kOk, kBad, kTruncated };

// The record framed at `pos` of `log`: its base id, payload and end offset.
Frame ReadFrame(std::string_view log, size_t pos, uint64_t* base_id, std::string_view* payload,
                size_t* end) {
  if (log.size() - pos < kRecordHeader) return Frame::kTruncated;
  const std::string_view header = log.substr(pos, kRecordHeader);
  if (header.substr(0, 4) != kRecordMagic) return Frame::kBad;
  const Digest128 check = Xxh3Digest(header.substr(0, 16));
  if (std::memcmp(check.bytes.data(), header.data() + 16, 4) != 0) return Frame::kBad;
  const uint32_t length = LoadU32(header.substr(12));
  if (log.size() - pos - kRecordHeader < uint64_t{length} + kRecordTrailer) {
    return Frame::kTruncated;
  }
  const std::string_view body = log.substr(pos, kRecordHeader + length);
  Digest128 want;
  std::memcpy(want.bytes.data(), log.data() + pos + body.size(), 16);
  if (Xxh3Digest(body) != want) return Frame::kBad;
  *base_id = LoadU64(header.substr(4));
  *payload = body.substr(kRecordHeader);
  *end = pos + body.size() + kRecordTrailer;
  return Frame::kOk;
}

// True when a whole, valid record of `base_id` starts anywhere after `pos`.
bool ValidRecordAfter(std::string_view log, size_t pos, uint64_t base_id) {
  for (size_t at = log.find(kRecordMagic, pos + 1); at != std::string_view::npos;
       at = log.find(kRecordMagic, at + 1)) {
    uint64_t id;
    std::string_view payload;
    size_t end;
    Delta delta;
    if (ReadFrame(log, at, &id, &payload, &end) == Frame::kOk && id == base_id &&
        DecodeDelta(payload, &delta)) {
      return true;
    }
  }
  return false;
}

void ApplyDelta(Delta&& delta, State* s, std::map<std::string, std::optional<CacheEntry>>* cache) {
  s->generation = delta.generation;
  for (auto& j : delta.journal_added) s->journal.push_back(std::move(j));
  while (s->journal.size() > delta.journal_keep) s->journal.pop_front();
  if (delta.instances) s->instances = std::move(*delta.instances);
  if (delta.images) s->images = std::move(*delta.images);
  for (CacheEntry& c : delta.upserts) {
    std::string path = c.path;
    (*cache)[std::move(path)] = std::move(c);
  }
  for (std::string& path : delta.removes) (*cache)[std::move(path)] = std::nullopt;
}

// `base` with the log's changes (the last one of each path) applied.
std::shared_ptr<const Cache> MergeCache(const Cache& base,
                                        std::map<std::string, std::optional<CacheEntry>>&& delta) {
  std::vector<CacheEntry> upserts;
  std::vector<std::string> removes;
  for (auto& [path, entry] : delta) {
    if (entry) {
      upserts.push_back(std::move(*entry));
    } else {
      removes.push_back(path);
    }
  }
  return std::make_shared<const Cache>(base.With(std::move(upserts), removes));
}

enum class Replay { kOk, kCorrupt };

struct ReplayResult {
  Replay outcome = Replay::kOk;
  size_t records = 0;     // of this base, applied
  size_t good_bytes = 0;  // the end of the last of them
  bool junk = false;      // something else in the log (a torn record, another base's records)
};

ReplayResult ReplayLog(std::string_view log, uint64_t base_id, State* s) {
  ReplayResult r;
  std::map<std::string, std::optional<CacheEntry>> cache;
  size_t pos = 0;
  while (pos < log.size()) {
    uint64_t id;
    std::string_view payload;
    size_t end;
    Delta delta;
    const Frame frame = ReadFrame(log, pos, &id, &payload, &end);
    if (frame == Frame::kOk && id != base_id) {  // a log the base was compacted from
      r.junk = true;
      pos = end;
      continue;
    }
    if (frame == Frame::kOk && DecodeDelta(payload, &delta)) {
      ApplyDelta(std::move(delta), s, &cache);
      ++r.records;
      r.good_bytes = pos = end;
      continue;
    }
    // A torn append is the last thing in the log: anything valid after it is corruption.
    if (ValidRecordAfter(log, pos, base_id)) {
      r.outcome = Replay::kCorrupt;
      return r;
    }
    r.junk = true;
    break;
  }
  if (!cache.empty()) s->cache = MergeCache(*s->cache, std::move(cache));
  return r;
}

}  // namespace

// ---- Types -------------------------------------------------------------------

// ---- Formats -----------------------------------------------------------------

std::string EncodeBase(const State& s, uint64_t base_id) {
  Encoder e;
  e.out().reserve(4096 + s.cache->size() * 160);
  e.out().append(kStateMagic);
  e.U64(base_id);
  e.U64(s.generation);
  e.Str(s.boot_id);
  e.U32(static_cast<uint32_t>(s.journal.size()));
  for (const auto& j : s.journal) EncodeJournalEntry(e, *j);
  EncodeInstances(e, s.instances);
  EncodeImages(e, s.images);
  e.U32(static_cast<uint32_t>(s.cache->size()));
  for (const CacheEntry* c : s.cache->Sorted()) EncodeEntry(e, *c);
  Digest128 sum = Xxh3Digest(e.out());
  e.Dig(sum);
  return std::move(e.out());
}

BaseDecode DecodeBase(std::string_view data, State* s, uint64_t* base_id) {
  if (data.size() < kStateMagic.size() + 16) {
    return data.starts_with("LBEXPST") ? BaseDecode::kOld : BaseDecode::kCorrupt;
  }
  const std::string_view magic = data.substr(0, kStateMagic.size());
  if (magic != kStateMagic && magic != kStateMagicNoBaseId && magic != kStateMagicNoWarnings &&
      magic != kStateMagicNoSha) {
    return magic.starts_with("LBEXPST") ? BaseDecode::kOld : BaseDecode::kCorrupt;
  }
  const bool has_base_id = magic == kStateMagic;
  const bool has_sha = magic != kStateMagicNoSha;
  const bool has_warnings = magic == kStateMagic || magic == kStateMagicNoBaseId;
  std::string_view body = data.substr(0, data.size() - 16);
  Digest128 want;
  std::copy(data.end() - 16, data.end(), want.bytes.begin());
  if (Xxh3Digest(body) != want) return BaseDecode::kCorrupt;
  Decoder d(body.substr(kStateMagic.size()));
  *base_id = 0;
  if (has_base_id && (!d.U64(base_id) || *base_id == 0)) return BaseDecode::kCorrupt;
  uint32_t n;
  if (!d.U64(&s->generation) || !d.Str(&s->boot_id) || !d.U32(&n)) return BaseDecode::kCorrupt;
  for (uint32_t k = 0; k < n; ++k) {
    std::shared_ptr<const JournalEntry> j;
    if (!DecodeJournalEntry(d, &j)) return BaseDecode::kCorrupt;
    s->journal.push_back(std::move(j));
  }
  if (!DecodeInstances(d, has_warnings, &s->instances) || !DecodeImages(d, &s->images) ||
      !d.U32(&n)) {
    return BaseDecode::kCorrupt;
  }
  CacheBuilder cache;
  std::string last;
  for (uint32_t k = 0; k < n; ++k) {
    CacheEntry c;
    if (!DecodeEntry(d, has_sha, &c)) return BaseDecode::kCorrupt;
    // Sorted and unique, as written; anything else is corruption.
    if (k > 0 && !(last < c.path)) return BaseDecode::kCorrupt;
    last = c.path;
    cache.Add(std::move(c));
  }
  s->cache = std::make_shared<const Cache>(cache.Finish());
  return d.done() ? BaseDecode::kOk : BaseDecode::kCorrupt;
}

std::string EncodeRecord(const State& from, const State& to, uint64_t base_id) {
  const uint64_t last = from.journal.empty() ? 0 : from.journal.back()->generation;
  std::vector<const JournalEntry*> added;
  for (const auto& j : to.journal) {
    if (j->generation > last) added.push_back(j.get());
  }
  const bool instances = to.instances != from.instances;
  const bool images = to.images != from.images;
  std::vector<const CacheEntry*> upserts;
  std::vector<const std::string*> removes;
  if (from.cache != to.cache) {
    DiffCaches(
        *from.cache, *to.cache, [&](const CacheEntry& o) { removes.push_back(&o.path); },
        [&](const CacheEntry& n) { upserts.push_back(&n); },
        [&](const CacheEntry& o, const CacheEntry& n) {
          if (!o.SamePersisted(n)) upserts.push_back(&n);
        });
  }
  if (to.generation == from.generation && added.empty() &&
      to.journal.size() == from.journal.size() && !instances && !images && upserts.empty() &&
      removes.empty()) {
    return "";
  }
  Encoder e;
  e.out().append(kRecordMagic);
  e.U64(base_id);
  e.U32(0);  // the payload's length, set below
  e.U32(0);  // the header check, set below
  e.U64(to.generation);
  e.U32(static_cast<uint32_t>(to.journal.size()));
  e.U32(static_cast<uint32_t>(added.size()));
  for (const JournalEntry* j : added) EncodeJournalEntry(e, *j);
  e.U8(static_cast<uint8_t>((instances ? kHasInstances : 0) | (images ? kHasImages : 0)));
  if (instances) EncodeInstances(e, to.instances);
  if (images) EncodeImages(e, to.images);
  e.U32(static_cast<uint32_t>(upserts.size()));
  for (const CacheEntry* c : upserts) EncodeEntry(e, *c);
  e.U32(static_cast<uint32_t>(removes.size()));
  for (const std::string* path : removes) e.Str(*path);
  std::string& out = e.out();
  const uint32_t length = static_cast<uint32_t>(out.size() - kRecordHeader);
  for (int i = 0; i < 4; ++i) out[12 + i] = static_cast<char>((length >> (8 * i)) & 0xff);
  const Digest128 check = Xxh3Digest(std::string_view(out).substr(0, 16));
  std::memcpy(out.data() + 16, check.bytes.data(), 4);
  e.Dig(Xxh3Digest(out));
  return std::move(out);
}

// ---- ExportStateFile ---------------------------------------------------------

ExportStateFile::ExportStateFile(Env& env, const std::string& dir, Options options)
    : env_(env),
      options_(options),
      dir_(dir),
      base_path_(JoinPath(dir, kStateFile)),
      log_path_(JoinPath(dir, kStateLogFile)) {}

Result<std::unique_ptr<ExportStateFile>> ExportStateFile::Open(Env& env, const std::string& dir,
                                                               State* state, Options options) {
  std::unique_ptr<ExportStateFile> f(new ExportStateFile(env, dir, options));
  RETURN_IF_ERROR(f->Load(state));
  return f;
}

Status ExportStateFile::Load(State* state) {
  RETURN_IF_ERROR(CreateDirs(env_, dir_, 0700));
  auto data = ReadFileToString(env_, base_path_, 4ull << 30);
  if (!data.ok()) {
    if (data.status().code() != Code::kNotFound) return data.status().WithContext("export state");
    return StartLineage(state);
  }
  State s;
  uint64_t id = 0;
  const BaseDecode decoded = DecodeBase(*data, &s, &id);
  base_bytes_ = data->size();
  std::string().swap(*data);
  if (decoded == BaseDecode::kOld) {
    log::Warn(
        "export state of an older version (no owners, no hard links): starting a new "
        "lineage (peers keep their copies aside)",
        {{"path", base_path_}});
    return StartLineage(state);
  }
  ReplayResult replay;
  bool no_log = true;
  if (decoded == BaseDecode::kOk && id != 0) {
    auto log = ReadFileToString(env_, log_path_, 4ull << 30);
    if (!log.ok() && log.status().code() != Code::kNotFound) {
      return log.status().WithContext("export state log");
    }
    no_log = !log.ok();
    if (log.ok()) replay = ReplayLog(*log, id, &s);
  }
  if (decoded == BaseDecode::kCorrupt || replay.outcome == Replay::kCorrupt) {
    log::Warn(
        "export state is corrupt: starting a new lineage (peers will keep their copies aside)",
        {{"path", decoded == BaseDecode::kCorrupt ? base_path_ : log_path_}});
    RETURN_IF_ERROR(env_.Rename(base_path_, base_path_ + ".corrupt"));
    if (Status st = env_.Rename(log_path_, log_path_ + ".corrupt");
        !st.ok() && st.code() != Code::kNotFound) {
      return st;
    }
    return StartLineage(state);
  }
  if (replay.junk) {
    log::Warn("export state log: cut after its last whole record",
              {{"path", log_path_}, {"records", replay.records}, {"bytes", replay.good_bytes}});
  }
  base_id_ = id;
  log_bytes_ = replay.good_bytes;
  // An old base, or records followed by junk: the next save writes a new
  // base. Junk only: the log is emptied before the next append.
  rewrite_base_ = id == 0 || (replay.junk && replay.records > 0);
  // No log yet: the first append creates it through ResetLog, which syncs
  // the directory, so the record's file survives a power loss.
  reset_log_ = (replay.junk && replay.records == 0) || no_log;
  saved_ = s;
  *state = std::move(s);
  return Status::Ok();
}

Status ExportStateFile::StartLineage(State* state) {
  State s;
  s.boot_id = RandomHex();
  rewrite_base_ = true;
  RETURN_IF_ERROR(WriteBase(s));
  RETURN_IF_ERROR(ResetLog());
  rewrite_base_ = false;
  saved_ = s;
  *state = std::move(s);
  return Status::Ok();
}

Status ExportStateFile::WriteBase(const State& s) {
  const uint64_t id = NewBaseId();
  const std::string data = EncodeBase(s, id);
  RETURN_IF_ERROR(WriteFileAtomic(env_, base_path_, data, 0600));
  base_id_ = id;
  base_bytes_ = data.size();
  return Status::Ok();
}

Status ExportStateFile::ResetLog() {
  log_.reset();
  ASSIGN_OR_RETURN(auto file, env_.OpenWrite(log_path_, 0600));  // truncates
  RETURN_IF_ERROR(env_.SyncDir(dir_));
  log_ = std::move(file);
  log_bytes_ = 0;
  reset_log_ = false;
  return Status::Ok();
}

Status ExportStateFile::Append(const std::string& record) {
  if (reset_log_) RETURN_IF_ERROR(ResetLog());
  if (log_ == nullptr) {
    ASSIGN_OR_RETURN(log_, env_.OpenAppend(log_path_, 0600));
  }
  RETURN_IF_ERROR(log_->Append(record));
  RETURN_IF_ERROR(log_->Sync());
  log_bytes_ += record.size();
  return Status::Ok();
}

uint64_t ExportStateFile::LogLimit() const {
  return std::max(base_bytes_ / 2, options_.min_log_limit);
}

Status ExportStateFile::Save(const State& next) {
  Status st;
  if (!rewrite_base_ && base_id_ != 0 && next.boot_id == saved_.boot_id) {
    const std::string record = EncodeRecord(saved_, next, base_id_);
    if (record.empty()) {
      saved_ = next;
      return Status::Ok();
    }
    if (log_bytes_ + record.size() <= LogLimit()) {
      st = Append(record);
      if (st.ok()) {
        saved_ = next;
        return st;
      }
    }
  }
  if (st.ok()) {
    // Compaction: a new base, then an empty log (its records name the old base).
    rewrite_base_ = true;
    st = WriteBase(next);
    if (st.ok()) st = ResetLog();
    if (st.ok()) {
      rewrite_base_ = false;
      saved_ = next;
      return st;
    }
  }
  // What is on disk is `saved_` or `next`, maybe with a partial record after
  // it: never append to it again.
  log_.reset();
  rewrite_base_ = true;
  return st;
}

}  // namespace lifeboat::exports::internal
