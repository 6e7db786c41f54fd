//! `rpull-stepcost DIR BLOB...`: for each layer blob, the CPU time of each step rpull performs
//! on it, measured alone: sha256 of the blob, writing the blob to a file, decompressing it,
//! sha256 of the tar, and unpacking the tar's files (tar crate, permissions kept) under DIR.
//! Prints one JSON object with the totals in seconds and bytes.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use sha2::{Digest, Sha256};

/// User+system CPU seconds of this process so far.
fn cpu() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct Step {
    cpu: f64,
    wall: f64,
}

fn measure<T>(acc: &mut Step, f: impl FnOnce() -> T) -> T {
    let (c, w) = (cpu(), Instant::now());
    let out = f();
    acc.cpu += cpu() - c;
    acc.wall += w.elapsed().as_secs_f64();
    out
}

fn decoder<'a>(blob: &'a [u8]) -> Box<dyn Read + 'a> {
    if blob.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(blob))
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(blob).expect("zstd"))
    } else {
        Box::new(blob)
    }
}

fn main() -> io::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: rpull-stepcost DIR BLOB..."));
    let names = [
        "sha256_blob",
        "write_blob",
        "decompress",
        "sha256_tar",
        "unpack_tar",
    ];
    let mut steps: Vec<Step> = names.iter().map(|_| Step { cpu: 0.0, wall: 0.0 }).collect();
    let (mut blob_bytes, mut tar_bytes) = (0u64, 0u64);
    for (i, path) in args.enumerate() {
        let blob = fs::read(&path)?;
        blob_bytes += blob.len() as u64;
        measure(&mut steps[0], || Sha256::digest(&blob));
        let out = dir.join(format!("blob{i}"));
        measure(&mut steps[1], || File::create(&out)?.write_all(&blob))?;
        fs::remove_file(&out)?;
        // Decompress into a reused 1 MiB buffer (no allocation in the measured loop).
        let mut buf = vec![0u8; 1 << 20];
        measure(&mut steps[2], || -> io::Result<()> {
            let mut d = decoder(&blob);
            loop {
                let n = d.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                tar_bytes += n as u64;
            }
        })?;
        let mut tar = Vec::new();
        decoder(&blob).read_to_end(&mut tar)?;
        drop(blob);
        measure(&mut steps[3], || Sha256::digest(&tar));
        let root = dir.join(format!("layer{i}"));
        fs::create_dir_all(&root)?;
        measure(&mut steps[4], || {
            let mut a = tar::Archive::new(&tar[..]);
            a.set_preserve_permissions(true);
            a.set_preserve_mtime(true);
            a.unpack(&root)
        })?;
        fs::remove_dir_all(&root)?;
    }
    let fields: Vec<String> = names
        .iter()
        .zip(&steps)
        .map(|(n, s)| format!("\"{n}\": {{\"cpu\": {:.4}, \"wall\": {:.4}}}", s.cpu, s.wall))
        .collect();
    let total: f64 = steps.iter().map(|s| s.cpu).sum();
    println!(
        "{{\"blob_bytes\": {blob_bytes}, \"tar_bytes\": {tar_bytes}, \"cpu_total\": {total:.4}, \"steps\": {{{}}}}}",
        fields.join(", ")
    );
    Ok(())
}
