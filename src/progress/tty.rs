//! docker's terminal view: one line per layer, rewritten in place, drawn with `indicatif`.
//!
//! docker (`jsonmessage.DisplayJSONMessagesStream`) keeps a table of layer IDs. A new ID gets the
//! next row; a status change for a known ID rewrites that row; any other message (`Pulling from`,
//! `Digest:`, `Status:`, a warning, the final reference) is printed as a plain line below the rows
//! and resets the table, so later layers get fresh rows under it (this is how `pull -a` stacks one
//! block of layers per tag).
//!
//! Here one [`MultiProgress`] holds the rows of the current block, one [`ProgressBar`] per layer
//! ID whose `{msg}` is the docker-formatted line (see [`format_layer_line`]). indicatif redraws the
//! block at most 20 times a second; a small ticker thread redraws every 100 ms so the last update
//! before a pause is never left unshown. When a plain line arrives the block is frozen: every bar
//! is finished (so its final text is drawn), then the bars are dropped top to bottom, which makes
//! indicatif forget those lines without clearing them, and the plain line is printed below.
//! Nothing is drawn until the first layer event, so an up-to-date pull prints only plain lines.
//!
//! Output goes through [`Screen`], an indicatif [`TermLike`] over any writer, so tests can capture
//! the exact bytes, and plain lines and bar redraws share one buffer and one lock.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use super::plain::lock;
use super::{plain_line, render_progress, Event, LayerStatus, Reporter};

/// indicatif's redraw limit for a real terminal.
const REFRESH_HZ: u8 = 20;
/// How often the ticker redraws the current block.
const TICK: Duration = Duration::from_millis(100);
/// docker's width when the terminal size cannot be read.
const DEFAULT_WIDTH: u16 = 200;

/// docker's terminal line for a layer: `"<id>: <status> <progress>"`, e.g.
/// `907a724901cb: Downloading [=====>     ]  12.35MB/45.6MB`, or `907a724901cb: Pull complete `
/// (docker keeps the space before the empty progress).
pub fn format_layer_line(id: &str, status: &str, progress: &str) -> String {
    format!("{id}: {status} {progress}")
}

/// Where the terminal size comes from.
#[derive(Debug, Clone, Copy)]
enum Size {
    /// Ask the file descriptor with `TIOCGWINSZ` every time.
    Fd(libc::c_int),
    /// A fixed size (tests, or output that is not a terminal).
    Fixed { cols: u16, rows: u16 },
}

impl Size {
    /// (columns, rows) as the kernel reports them, `None` if the fd is not a terminal.
    fn query(&self) -> Option<(u16, u16)> {
        match *self {
            Size::Fixed { cols, rows } => Some((cols, rows)),
            Size::Fd(fd) => {
                // SAFETY: TIOCGWINSZ writes a `winsize` into the struct we pass; nothing else.
                let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
                let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
                (rc == 0).then_some((ws.ws_col, ws.ws_row))
            }
        }
    }

    /// The width docker uses to render progress: the reported columns, 200 if unknown.
    fn render_width(&self) -> u16 {
        self.query().map_or(DEFAULT_WIDTH, |(cols, _)| cols)
    }
}

/// The output terminal: a writer plus its size, implementing indicatif's [`TermLike`].
///
/// Writes are collected in a buffer and sent to the writer on `flush`, so every redraw reaches
/// the terminal in one write.
struct Screen<W> {
    inner: Mutex<ScreenInner<W>>,
    size: Size,
}

struct ScreenInner<W> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> Screen<W> {
    fn write_bytes(&self, bytes: &[u8]) {
        lock(&self.inner).buf.extend_from_slice(bytes);
    }

    /// Moves the cursor `n` cells in `direction` (the CSI final byte: `A` up, `B` down,
    /// `C` right, `D` left); nothing for 0, since `ESC [ 0 A` moves one cell.
    fn move_cursor(&self, n: usize, direction: char) -> io::Result<()> {
        if n > 0 {
            self.write_bytes(format!("\x1b[{n}{direction}").as_bytes());
        }
        Ok(())
    }

    fn flush_out(&self) -> io::Result<()> {
        let mut inner = lock(&self.inner);
        let ScreenInner { out, buf } = &mut *inner;
        let result = out.write_all(buf).and_then(|()| out.flush());
        buf.clear();
        result
    }
}

impl<W> fmt::Debug for Screen<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Screen")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A shared handle to the [`Screen`], given to indicatif as its draw target.
struct ScreenHandle<W>(Arc<Screen<W>>);

impl<W> fmt::Debug for ScreenHandle<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<W: Write + Send + 'static> TermLike for ScreenHandle<W> {
    fn width(&self) -> u16 {
        // indicatif pads every line to this width, so it must be the real one; a zero width
        // (some ptys) would break its arithmetic.
        match self.0.size.query() {
            Some((cols, _)) if cols > 0 => cols,
            _ => DEFAULT_WIDTH,
        }
    }

    fn height(&self) -> u16 {
        match self.0.size.query() {
            Some((_, rows)) if rows > 0 => rows,
            _ => u16::MAX,
        }
    }

    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor(n, 'A')
    }

    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor(n, 'B')
    }

    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor(n, 'C')
    }

    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        self.0.move_cursor(n, 'D')
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        self.0.write_bytes(s.as_bytes());
        self.0.write_bytes(b"\n");
        Ok(())
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        self.0.write_bytes(s.as_bytes());
        Ok(())
    }

    fn clear_line(&self) -> io::Result<()> {
        self.0.write_bytes(b"\r\x1b[2K");
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.0.flush_out()
    }
}

/// One layer row of the current block.
struct Row {
    bar: ProgressBar,
    line: String,
}

/// The layer rows drawn since the last plain line.
struct Block {
    multi: MultiProgress,
    rows: Vec<Row>,
    index: HashMap<String, usize>,
}

/// State shared between the reporter and its ticker thread.
struct Shared<W> {
    screen: Arc<Screen<W>>,
    /// indicatif's redraw limit; `None` draws every change at once (deterministic, for tests).
    refresh_hz: Option<u8>,
    block: Mutex<Option<Block>>,
}

impl<W: Write + Send + 'static> Shared<W> {
    /// Set the line of layer `id`, adding a row for a new ID. `last` finishes the bar (its final
    /// text is then always drawn at once).
    fn set_row(&self, block: &mut Option<Block>, id: &str, line: String, last: bool) {
        let block = block.get_or_insert_with(|| self.new_block());
        if let Some(&i) = block.index.get(id) {
            let row = &mut block.rows[i];
            if last && !row.bar.is_finished() {
                row.bar.finish_with_message(line.clone());
            } else if row.line != line {
                row.bar.set_message(line.clone());
            }
            row.line = line;
            return;
        }
        // Configure the bar while it is hidden, then hand it to the MultiProgress before it
        // draws anything (see indicatif's MultiProgress docs on "inadvertent draws").
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        bar.set_style(ProgressStyle::with_template("{msg}").expect("static template"));
        let bar = block.multi.add(bar);
        if last {
            bar.finish_with_message(line.clone());
        } else {
            bar.set_message(line.clone());
        }
        block.index.insert(id.to_string(), block.rows.len());
        block.rows.push(Row { bar, line });
    }

    fn new_block(&self) -> Block {
        let term = Box::new(ScreenHandle(self.screen.clone()));
        let target = match self.refresh_hz {
            Some(hz) => ProgressDrawTarget::term_like_with_hz(term, hz),
            None => ProgressDrawTarget::term_like(term),
        };
        Block {
            multi: MultiProgress::with_draw_target(target),
            rows: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Freeze the current block: draw every row in its final state, leave the rows on screen and
    /// put the cursor at the start of the line below them.
    fn end_block(&self, block: &mut Option<Block>) {
        let Some(block) = block.take() else { return };
        for row in &block.rows {
            if !row.bar.is_finished() {
                // Forces a redraw with the current text.
                row.bar.finish();
            }
        }
        // Dropping a finished bar that is first in its MultiProgress makes indicatif forget its
        // lines without clearing them; dropping top to bottom keeps that true for every bar.
        for row in block.rows {
            drop(row);
        }
        drop(block.multi);
        // indicatif pads each line to the terminal width and leaves the cursor in the pending-wrap
        // position at the end of the last row; "\r\n" moves to the start of the next line, where
        // docker's cursor would be.
        self.screen.write_bytes(b"\r\n");
        let _ = self.screen.flush_out();
    }

    /// Redraw the current block (ticker): a tick on any unfinished bar redraws all rows.
    fn tick(&self) {
        let block = lock(&self.block);
        if let Some(row) = block
            .as_ref()
            .and_then(|b| b.rows.iter().find(|r| !r.bar.is_finished()))
        {
            row.bar.tick();
        }
    }
}

/// The ticker thread's handle: dropping it stops and joins the thread.
struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start<W: Write + Send + 'static>(shared: Weak<Shared<W>>) -> Option<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("rpull-progress".into())
            .spawn(move || loop {
                let (flag, cvar) = &*stop2;
                let guard = lock(flag);
                let (guard, _) = cvar
                    .wait_timeout_while(guard, TICK, |stopped| !*stopped)
                    .unwrap_or_else(|e| e.into_inner());
                if *guard {
                    return;
                }
                drop(guard);
                match shared.upgrade() {
                    Some(shared) => shared.tick(),
                    None => return,
                }
            })
            .ok()?;
        Some(Self {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// docker's terminal output: layer lines rewritten in place with progress bars (bars only when
/// the terminal is wider than 110 columns), plain lines around them.
///
/// Notes go to the error sink (stderr), printed above the live rows. [`Event::Error`] ends the
/// current block so that an error printed afterwards lands below it; [`Event::Result`] is
/// ignored. Call [`Reporter::finish`] before printing anything else to the terminal.
pub struct TtyReporter<W: Write + Send + 'static, E: Write + Send = io::Stderr> {
    shared: Arc<Shared<W>>,
    err: Mutex<E>,
    ticker: Mutex<Option<Ticker>>,
}

impl TtyReporter<io::Stdout> {
    /// The reporter for the real terminal: writes to stdout, reads its size from fd 1 (200
    /// columns if unknown), redraws at most 20 times a second, notes on stderr.
    pub fn stdout() -> Self {
        Self::build(io::stdout(), io::stderr(), Size::Fd(1), Some(REFRESH_HZ))
    }
}

impl<W: Write + Send + 'static> TtyReporter<W> {
    /// A reporter drawing to `out` as a terminal of `cols` × `rows`, with notes on stderr. Every
    /// change is drawn at once (no rate limit), so the output is deterministic.
    pub fn new(out: W, cols: u16, rows: u16) -> Self {
        Self::with_stderr(out, io::stderr(), cols, rows)
    }
}

impl<W: Write + Send + 'static, E: Write + Send> TtyReporter<W, E> {
    /// Like [`TtyReporter::new`], with notes on `err`.
    pub fn with_stderr(out: W, err: E, cols: u16, rows: u16) -> Self {
        Self::build(out, err, Size::Fixed { cols, rows }, None)
    }

    fn build(out: W, err: E, size: Size, refresh_hz: Option<u8>) -> Self {
        let screen = Arc::new(Screen {
            inner: Mutex::new(ScreenInner { out, buf: Vec::new() }),
            size,
        });
        Self {
            shared: Arc::new(Shared {
                screen,
                refresh_hz,
                block: Mutex::new(None),
            }),
            err: Mutex::new(err),
            ticker: Mutex::new(None),
        }
    }

    /// Start the redraw ticker (only when redraws are rate-limited), once.
    fn ensure_ticker(&self) {
        if self.shared.refresh_hz.is_none() {
            return;
        }
        let mut ticker = lock(&self.ticker);
        if ticker.is_none() {
            *ticker = Ticker::start(Arc::downgrade(&self.shared));
        }
    }

    fn write_err(&self, text: &str) {
        super::write_line(&mut *lock(&self.err), text);
    }
}

impl<W: Write + Send + 'static, E: Write + Send> Reporter for TtyReporter<W, E> {
    fn report(&self, event: Event) {
        let shared = &self.shared;
        match &event {
            Event::Layer { id, status } => {
                let last = matches!(status, LayerStatus::PullComplete | LayerStatus::AlreadyExists);
                let line = format_layer_line(id, &status.to_string(), "");
                shared.set_row(&mut lock(&shared.block), id, line, last);
                self.ensure_ticker();
            }
            Event::Progress {
                id,
                phase,
                current,
                total,
            } => {
                let progress = render_progress(*current, *total, shared.screen.size.render_width());
                let line = format_layer_line(id, &phase.to_string(), &progress);
                shared.set_row(&mut lock(&shared.block), id, line, false);
                self.ensure_ticker();
            }
            Event::Note(text) => match &*lock(&shared.block) {
                Some(block) => block.multi.suspend(|| self.write_err(text)),
                None => self.write_err(text),
            },
            Event::Error(_) => shared.end_block(&mut lock(&shared.block)),
            Event::Result(_) => {}
            other => {
                if let Some(line) = plain_line(other) {
                    let mut block = lock(&shared.block);
                    shared.end_block(&mut block);
                    shared.screen.write_bytes(line.as_bytes());
                    shared.screen.write_bytes(b"\n");
                    let _ = shared.screen.flush_out();
                }
            }
        }
    }

    fn finish(&self) {
        // Stop the ticker first so it cannot redraw a block being frozen.
        drop(lock(&self.ticker).take());
        self.shared.end_block(&mut lock(&self.shared.block));
        let _ = self.shared.screen.flush_out();
        let _ = lock(&self.err).flush();
    }
}

impl<W: Write + Send + 'static, E: Write + Send> Drop for TtyReporter<W, E> {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::super::Phase;
    use super::*;

    /// A `Write` whose bytes can be read while the reporter still owns it.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl SharedBuf {
        fn bytes(&self) -> Vec<u8> {
            self.0.lock().unwrap().clone()
        }
    }

    /// A minimal VT100 screen (cooked mode: `\n` also returns the carriage): enough to replay
    /// what the reporter wrote and compare it with docker's screen captures. Keeps scrollback.
    struct Vt {
        cols: usize,
        rows: usize,
        lines: Vec<Vec<char>>,
        top: usize,
        row: usize,
        col: usize,
        wrap_pending: bool,
    }

    impl Vt {
        fn new(cols: usize, rows: usize) -> Self {
            Self {
                cols,
                rows,
                lines: vec![vec![]],
                top: 0,
                row: 0,
                col: 0,
                wrap_pending: false,
            }
        }

        fn line_feed(&mut self) {
            self.row += 1;
            if self.row >= self.lines.len() {
                self.lines.push(vec![]);
            }
            if self.row >= self.top + self.rows {
                self.top = self.row + 1 - self.rows;
            }
        }

        fn feed(&mut self, bytes: &[u8]) {
            let text = String::from_utf8(bytes.to_vec()).unwrap();
            let mut chars = text.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\x1b' => {
                        assert_eq!(chars.next(), Some('['));
                        let mut n = String::new();
                        while let Some(d) = chars.next_if(|d| d.is_ascii_digit()) {
                            n.push(d);
                        }
                        let n: usize = n.parse().unwrap_or(1);
                        self.wrap_pending = false;
                        match chars.next().unwrap() {
                            'A' => self.row = self.row.saturating_sub(n).max(self.top),
                            'B' => self.row = (self.row + n).min(self.top + self.rows - 1),
                            'C' => self.col = (self.col + n).min(self.cols - 1),
                            'D' => self.col = self.col.saturating_sub(n),
                            'K' if n == 2 => self.lines[self.row].clear(),
                            other => panic!("unexpected escape {other}"),
                        }
                        while self.lines.len() <= self.row {
                            self.lines.push(vec![]);
                        }
                    }
                    '\r' => {
                        self.col = 0;
                        self.wrap_pending = false;
                    }
                    '\n' => {
                        self.col = 0;
                        self.wrap_pending = false;
                        self.line_feed();
                    }
                    c => {
                        if self.wrap_pending {
                            self.col = 0;
                            self.wrap_pending = false;
                            self.line_feed();
                        }
                        let line = &mut self.lines[self.row];
                        if line.len() <= self.col {
                            line.resize(self.col + 1, ' ');
                        }
                        line[self.col] = c;
                        if self.col + 1 == self.cols {
                            self.wrap_pending = true;
                        } else {
                            self.col += 1;
                        }
                    }
                }
            }
        }

        /// The screen and scrollback, trailing spaces trimmed (like `tmux capture-pane`), and
        /// the cursor position.
        fn text(&self) -> (String, (usize, usize)) {
            let mut out = String::new();
            for line in &self.lines {
                let s: String = line.iter().collect();
                out.push_str(s.trim_end());
                out.push('\n');
            }
            (out, (self.row, self.col))
        }
    }

    fn screen_of(bytes: &[u8], cols: usize) -> (String, (usize, usize)) {
        let mut vt = Vt::new(cols, 40);
        vt.feed(bytes);
        vt.text()
    }

    use super::super::fixtures::{layer, progress, DIGEST, REF};

    fn run(cols: u16, events: Vec<Event>, check: impl Fn(usize, &[u8])) -> (Vec<u8>, String) {
        let out = SharedBuf::default();
        let err = SharedBuf::default();
        let r = TtyReporter::with_stderr(out.clone(), err.clone(), cols, 40);
        for (i, e) in events.into_iter().enumerate() {
            r.report(e);
            check(i, &out.bytes());
        }
        r.finish();
        drop(r);
        (out.bytes(), String::from_utf8(err.bytes()).unwrap())
    }

    #[test]
    fn layer_line_format() {
        assert_eq!(
            format_layer_line("ID", "status", &render_progress(1, 0, 200)),
            "ID: status       1B"
        );
        assert_eq!(
            format_layer_line("907a724901cb", "Pull complete", ""),
            "907a724901cb: Pull complete "
        );
        assert_eq!(
            format_layer_line("907a724901cb", "Downloading", &render_progress(505_900, 48_680_000, 120)),
            "907a724901cb: Downloading [>                                                  ]  505.9kB/48.68MB"
        );
        assert_eq!(
            format_layer_line(
                "907a724901cb",
                "Downloading",
                &render_progress(513_000, 48_680_000, 80)
            ),
            "907a724901cb: Downloading    513kB/48.68MB"
        );
    }

    /// Capture 04 (120 columns): the mid-pull snapshots and the final screen (snapshot 19).
    #[test]
    fn tty_reproduces_capture_04() {
        let id = "907a724901cb";
        let total = 48_680_000;
        let events = vec![
            Event::PullingFrom {
                id: "bookworm".into(),
                path: "bench/debian".into(),
            },
            layer(id, LayerStatus::PullingFsLayer),
            progress(id, Phase::Downloading, 491_500, total),
            progress(id, Phase::Downloading, 10_940_000, total),
            layer(id, LayerStatus::VerifyingChecksum),
            layer(id, LayerStatus::DownloadComplete),
            progress(id, Phase::Extracting, 3_441_000, total),
            progress(id, Phase::Extracting, total, total),
            layer(id, LayerStatus::PullComplete),
            Event::Digest(DIGEST.into()),
            Event::Status {
                newer: true,
                reference: REF.into(),
            },
            Event::Done(REF.into()),
        ];
        let snapshot = |i: usize, bytes: &[u8]| {
            let (text, _) = screen_of(bytes, 120);
            let want = match i {
                2 => "907a724901cb: Downloading [>                                                  ]  491.5kB/48.68MB",
                3 => "907a724901cb: Downloading [===========>                                       ]  10.94MB/48.68MB",
                5 => "907a724901cb: Download complete",
                6 => "907a724901cb: Extracting [===>                                               ]  3.441MB/48.68MB",
                8 => "907a724901cb: Pull complete",
                _ => return,
            };
            assert_eq!(
                text,
                format!("bookworm: Pulling from bench/debian\n{want}\n"),
                "after event {i}"
            );
        };
        let (bytes, err) = run(120, events, snapshot);
        let (text, cursor) = screen_of(&bytes, 120);
        assert_eq!(
            text,
            format!(
                "bookworm: Pulling from bench/debian\n\
                 907a724901cb: Pull complete\n\
                 Digest: {DIGEST}\n\
                 Status: Downloaded newer image for {REF}\n\
                 {REF}\n\n"
            )
        );
        assert_eq!(cursor, (5, 0));
        assert_eq!(err, "");
    }

    /// Capture 06 (5 layers, one already present), final screen; and the 80-column view of
    /// capture 05b (numbers only).
    #[test]
    fn tty_multi_layer_and_narrow() {
        let ids = [
            "907a724901cb",
            "fea253671c61",
            "deaa2902e769",
            "838fca777be3",
            "9446d5f9e50e",
        ];
        let totals = [48_680_000, 204_700_000, 148_200_000, 47_630_000, 68_450_000];
        let mut events = vec![
            Event::PullingFrom {
                id: "5layers".into(),
                path: "bench/big".into(),
            },
            layer(ids[0], LayerStatus::AlreadyExists),
        ];
        for id in &ids[1..] {
            events.push(layer(id, LayerStatus::PullingFsLayer));
        }
        events.push(layer(ids[4], LayerStatus::Waiting));
        for step in 1..=4u64 {
            for (id, total) in ids[1..4].iter().zip(&totals[1..4]) {
                events.push(progress(id, Phase::Downloading, total * step / 4, *total));
            }
        }
        let mid = events.len();
        for (id, total) in ids[1..].iter().zip(&totals[1..]) {
            events.push(layer(id, LayerStatus::DownloadComplete));
            events.push(progress(id, Phase::Extracting, *total, *total));
            events.push(layer(id, LayerStatus::PullComplete));
        }
        events.push(Event::Digest(DIGEST.into()));
        events.push(Event::Status {
            newer: true,
            reference: "127.0.0.1:5000/bench/big:5layers".into(),
        });
        events.push(Event::Done("127.0.0.1:5000/bench/big:5layers".into()));

        let check_mid = |cols: usize, want: &'static [&'static str]| {
            move |i: usize, bytes: &[u8]| {
                if i == mid - 1 {
                    let (text, _) = screen_of(bytes, cols);
                    let want = format!("5layers: Pulling from bench/big\n{}\n", want.join("\n"));
                    assert_eq!(text, want);
                }
            }
        };
        let (bytes, _) = run(
            120,
            events.clone(),
            check_mid(
                120,
                &[
                    "907a724901cb: Already exists",
                    "fea253671c61: Downloading [==================================================>]  204.7MB/204.7MB",
                    "deaa2902e769: Downloading [==================================================>]  148.2MB/148.2MB",
                    "838fca777be3: Downloading [==================================================>]  47.63MB/47.63MB",
                    "9446d5f9e50e: Waiting",
                ],
            ),
        );
        let final_screen = "5layers: Pulling from bench/big\n\
                            907a724901cb: Already exists\n\
                            fea253671c61: Pull complete\n\
                            deaa2902e769: Pull complete\n\
                            838fca777be3: Pull complete\n\
                            9446d5f9e50e: Pull complete\n";
        let tail = format!(
            "Digest: {DIGEST}\nStatus: Downloaded newer image for 127.0.0.1:5000/bench/big:5layers\n\
             127.0.0.1:5000/bench/big:5layers\n\n"
        );
        assert_eq!(screen_of(&bytes, 120).0, format!("{final_screen}{tail}"));

        let (bytes, _) = run(
            80,
            events,
            check_mid(
                80,
                &[
                    "907a724901cb: Already exists",
                    "fea253671c61: Downloading  204.7MB/204.7MB",
                    "deaa2902e769: Downloading  148.2MB/148.2MB",
                    "838fca777be3: Downloading  47.63MB/47.63MB",
                    "9446d5f9e50e: Waiting",
                ],
            ),
        );
        assert_eq!(screen_of(&bytes, 80).0, format!("{final_screen}{tail}"));
    }

    /// No layer events: exactly the plain lines, no escape sequence at all.
    #[test]
    fn tty_up_to_date_prints_plain_lines_only() {
        let (bytes, _) = run(
            120,
            vec![
                Event::DefaultTag("latest".into()),
                Event::PullingFrom {
                    id: "latest".into(),
                    path: "bench/debian".into(),
                },
                Event::Digest(DIGEST.into()),
                Event::Status {
                    newer: false,
                    reference: "x:latest".into(),
                },
                Event::Done("docker.io/x:latest".into()),
                Event::Result(super::super::PullResult {
                    reference: "r".into(),
                    image_id: None,
                    tag: None,
                    digest: None,
                    size: None,
                    changed: None,
                    error: None,
                }),
            ],
            |_, _| {},
        );
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            format!(
                "Using default tag: latest\nlatest: Pulling from bench/debian\nDigest: {DIGEST}\n\
                 Status: Image is up to date for x:latest\ndocker.io/x:latest\n"
            )
        );
    }

    /// `pull -a`: each tag's block of layers stays on screen, the next one starts below it.
    /// Also: notes go to stderr, an error freezes the block, unfinished rows keep their text.
    #[test]
    fn tty_blocks_stack_and_errors_freeze() {
        let events = vec![
            Event::PullingFrom {
                id: "tag1".into(),
                path: "bench/many".into(),
            },
            layer("c053fee50175", LayerStatus::PullingFsLayer),
            layer("e12600b6840d", LayerStatus::PullingFsLayer),
            layer("e12600b6840d", LayerStatus::PullComplete),
            layer("c053fee50175", LayerStatus::PullComplete),
            Event::Digest("sha256:1".into()),
            Event::PullingFrom {
                id: "tag2".into(),
                path: "bench/many".into(),
            },
            layer("c053fee50175", LayerStatus::AlreadyExists),
            layer("e1d2ff791052", LayerStatus::PullingFsLayer),
            Event::Note("a note".into()),
            layer("e1d2ff791052", LayerStatus::Retrying { seconds: 1 }),
            Event::Error("boom".into()),
        ];
        let (bytes, err) = run(120, events, |_, _| {});
        let (text, cursor) = screen_of(&bytes, 120);
        assert_eq!(
            text,
            "tag1: Pulling from bench/many\n\
             c053fee50175: Pull complete\n\
             e12600b6840d: Pull complete\n\
             Digest: sha256:1\n\
             tag2: Pulling from bench/many\n\
             c053fee50175: Already exists\n\
             e1d2ff791052: Retrying in 1 second\n\n"
        );
        assert_eq!(cursor, (7, 0));
        assert_eq!(err, "a note\n");
    }

    /// The real-terminal configuration (rate limit + ticker) ends in the same final screen.
    #[test]
    fn tty_throttled_final_screen() {
        let out = SharedBuf::default();
        let r = TtyReporter::build(
            out.clone(),
            Vec::new(),
            Size::Fixed { cols: 120, rows: 40 },
            Some(20),
        );
        r.report(Event::PullingFrom {
            id: "t".into(),
            path: "p".into(),
        });
        for i in 0..=2000u64 {
            r.report(progress("aaaaaaaaaaaa", Phase::Downloading, i * 1000, 2_000_000));
            r.report(progress("bbbbbbbbbbbb", Phase::Downloading, i * 500, 2_000_000));
        }
        // The last updates may have been rate-limited away; the ticker must draw them soon.
        let bar = "=".repeat(50);
        let want_a = format!("aaaaaaaaaaaa: Downloading [{bar}>]      2MB/2MB");
        let want_b = format!(
            "bbbbbbbbbbbb: Downloading [{}>{}]      1MB/2MB",
            &bar[..25],
            " ".repeat(25)
        );
        let shown = || {
            let (text, _) = screen_of(&out.bytes(), 120);
            text.contains(&want_a) && text.contains(&want_b)
        };
        let start = std::time::Instant::now();
        while !shown() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(shown(), "{}", screen_of(&out.bytes(), 120).0);
        r.report(Event::Done("ref".into()));
        r.finish();
        let (text, _) = screen_of(&out.bytes(), 120);
        assert!(text.ends_with("1MB/2MB\nref\n\n"), "{text}");
    }
}
