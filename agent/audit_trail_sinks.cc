// The audit trail's writers: the JSON-lines file (uv_fs_write, bounded), journald
// (sd_journal_sendv) and stderr.
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "agent/audit_trail.h"

#ifdef MI_HAVE_SYSTEMD
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#endif

namespace mi {
namespace {

uint64_t Lines(std::string_view text) { return static_cast<uint64_t>(std::count(text.begin(), text.end(), '\n')); }

class StderrAuditWriter : public AuditWriter {
 public:
  explicit StderrAuditWriter(std::function<void(std::string_view)> line) : line_(std::move(line)) {}
  bool Write(const AuditRecord& record) override {
    const std::string json = AuditRecordJson(record);
    if (line_) {
      line_(json);
    } else {
      // One fwrite per line: stderr is unbuffered, a line is never split between two writes of ours.
      const std::string text = json + "\n";
      std::fwrite(text.data(), 1, text.size(), stderr);
    }
    return true;
  }
  uint64_t dropped() const override { return 0; }

 private:
  std::function<void(std::string_view)> line_;
};

#ifdef MI_HAVE_SYSTEMD
// journald's socket is a local datagram socket with a large buffer: a send
// costs about what a log line to stderr under systemd does.
class JournalAuditWriter : public AuditWriter {
 public:
  explicit JournalAuditWriter(Logger& logger) : logger_(logger) {}
  bool Write(const AuditRecord& record) override {
    const std::vector<std::string> fields = AuditJournalFields(record);
    std::vector<struct iovec> iov(fields.size());
    for (size_t i = 0; i < fields.size(); ++i) {
      iov[i].iov_base = const_cast<char*>(fields[i].data());
      iov[i].iov_len = fields[i].size();
    }
    const int r = sd_journal_sendv(iov.data(), static_cast<int>(iov.size()));
    if (r >= 0) return true;
    if (dropped_++ == 0) {
      MI_LOG(logger_, kWarning) << "audit: cannot send to the journal (" << std::strerror(-r)
                                << "); dropping records, counted in mi_agent_audit_dropped_total";
    }
    return false;
  }
  uint64_t dropped() const override { return dropped_; }

 private:
  Logger& logger_;
  uint64_t dropped_ = 0;
};
#endif

}  // namespace

std::unique_ptr<AuditWriter> AuditTrail::MakeWriter(const Options& o, Status* status) {
  switch (o.sink) {
    case SinkKind::kStderr:
      return std::make_unique<StderrAuditWriter>(env_.stderr_line);
    case SinkKind::kJournal:
#ifdef MI_HAVE_SYSTEMD
      return std::make_unique<JournalAuditWriter>(*env_.logger);
#else
      *status = Status::Error("audit.sink: journal is not available on this platform");
      return nullptr;
#endif
    case SinkKind::kFile: {
      auto file = std::make_unique<FileAuditWriter>(env_.loop, o.path, o.max_file_bytes, *env_.logger);
      *status = file->Open();
      if (!status->ok()) return nullptr;
      return file;
    }
  }
  return nullptr;
}

// ---- FileAuditWriter ----------------------------------------------------------

// One uv_fs_write in flight. It outlives the writer when the writer goes first
// (shutdown, reload): the callback then closes the fds it was left.
struct FileAuditWriter::WriteReq {
  uv_fs_t req;
  FileAuditWriter* owner = nullptr;
  std::string data;
  int close_fds[2] = {-1, -1};  // to close once written: a file rotated away, the writer's last one
  // The writer went first: its last lines, written synchronously after `data`.
  std::string tail;
  int tail_fd = -1;

  void CloseLater(int fd) { close_fds[close_fds[0] < 0 ? 0 : 1] = fd; }
};

namespace {

void CloseFd(uv_loop_t* loop, int fd) {
  if (fd < 0) return;
  uv_fs_t req;
  (void)uv_fs_close(loop, &req, fd, nullptr);  // a local file: a quick synchronous close
  uv_fs_req_cleanup(&req);
}

// Shutdown or reload only: the last lines, synchronously, once.
void WriteNow(uv_loop_t* loop, int fd, std::string& text) {
  if (fd < 0 || text.empty()) return;
  uv_fs_t req;
  uv_buf_t buf = uv_buf_init(text.data(), static_cast<unsigned>(text.size()));
  (void)uv_fs_write(loop, &req, fd, &buf, 1, -1, nullptr);
  uv_fs_req_cleanup(&req);
}

}  // namespace

FileAuditWriter::FileAuditWriter(uv_loop_s* loop, std::string path, int64_t max_file_bytes, Logger& logger)
    : loop_(loop), path_(std::move(path)), max_file_bytes_(max_file_bytes), logger_(logger) {}

FileAuditWriter::~FileAuditWriter() {
  if (fd_ < 0) return;
  if (in_flight_ != nullptr) {
    // The lines still waiting follow the write in flight, in order, from its callback.
    in_flight_->owner = nullptr;
    in_flight_->tail_fd = fd_;
    in_flight_->tail.swap(pending_);
    in_flight_->CloseLater(fd_);
    return;
  }
  WriteNow(loop_, fd_, pending_);
  CloseFd(loop_, fd_);
}

Status FileAuditWriter::Open() {
  uv_fs_t req;
  const int fd = uv_fs_open(loop_, &req, path_.c_str(),
                            UV_FS_O_WRONLY | UV_FS_O_APPEND | UV_FS_O_CREAT | UV_FS_O_NOFOLLOW, 0640, nullptr);
  uv_fs_req_cleanup(&req);
  if (fd < 0) return Status::Error("audit.path " + path_ + ": cannot open: " + uv_strerror(fd));
  const int r = uv_fs_fstat(loop_, &req, fd, nullptr);
  const uv_stat_t st = req.statbuf;
  uv_fs_req_cleanup(&req);
  if (r < 0 || (st.st_mode & S_IFMT) != S_IFREG) {
    CloseFd(loop_, fd);
    // A FIFO or a device could block the write threads; a symlink was refused by O_NOFOLLOW.
    return Status::Error("audit.path " + path_ + ": not a regular file");
  }
  if (in_flight_ != nullptr) {
    in_flight_->CloseLater(fd_);
  } else {
    CloseFd(loop_, fd_);
  }
  fd_ = fd;
  size_ = static_cast<int64_t>(st.st_size) + static_cast<int64_t>(pending_.size());
  warned_full_ = false;
  return Status::Ok();
}

Status FileAuditWriter::Reopen() {
  Status s = Open();
  StartWrite();
  return s;
}

bool FileAuditWriter::Write(const AuditRecord& record) {
  std::string line = AuditRecordJson(record);
  line += '\n';
  const int64_t n = static_cast<int64_t>(line.size());
  if (size_ + n > max_file_bytes_) {
    ++dropped_;
    if (!warned_full_) {
      warned_full_ = true;
      MI_LOG(logger_, kWarning) << "audit: " << path_ << " reached audit.max_file_bytes (" << max_file_bytes_
                                << "); dropping records until it is rotated (SIGHUP reopens it), counted in "
                                   "mi_agent_audit_dropped_total";
    }
    return false;
  }
  if (pending_.size() + line.size() > kMaxBuffered) {
    ++dropped_;  // the disk is slower than the records: bounded memory first
    return false;
  }
  pending_ += line;
  size_ += n;
  StartWrite();
  return true;
}

void FileAuditWriter::StartWrite() {
  if (in_flight_ != nullptr || pending_.empty() || fd_ < 0) return;
  auto* req = new WriteReq;
  req->owner = this;
  req->data.swap(pending_);
  req->req.data = req;
  uv_buf_t buf = uv_buf_init(req->data.data(), static_cast<unsigned>(req->data.size()));
  const int r = uv_fs_write(loop_, &req->req, fd_, &buf, 1, /*offset=*/-1, [](uv_fs_t* fs) {
    auto* w = static_cast<WriteReq*>(fs->data);
    const int64_t result = fs->result;
    uv_fs_req_cleanup(fs);
    if (w->owner != nullptr) {
      w->owner->OnWritten(w, result);
      return;
    }
    WriteNow(fs->loop, w->tail_fd, w->tail);
    for (int fd : w->close_fds) CloseFd(fs->loop, fd);
    delete w;
  });
  if (r < 0) {
    dropped_ += Lines(req->data);
    delete req;
    return;
  }
  in_flight_ = req;
}

void FileAuditWriter::OnWritten(WriteReq* req, int64_t result) {
  in_flight_ = nullptr;
  if (result < 0) {
    dropped_ += Lines(req->data);
    MI_LOG(logger_, kWarning) << "audit: writing " << path_ << " failed: " << uv_strerror(static_cast<int>(result))
                              << "; records dropped";
  } else if (result == 0) {
    dropped_ += Lines(req->data);  // no progress: never spin on it
  } else if (static_cast<size_t>(result) < req->data.size()) {
    // A short write (disk full?): the rest goes first next time.
    pending_.insert(0, req->data, static_cast<size_t>(result), std::string::npos);
  }
  for (int fd : req->close_fds) CloseFd(loop_, fd);
  delete req;
  StartWrite();
}

}  // namespace mi
