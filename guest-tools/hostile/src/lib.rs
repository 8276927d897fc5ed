//! Hostile fixture: each export tries one way out of the sandbox. The tests
//! grant it a directory (or nothing) and check every attempt is refused.

use std::io::Read;

use wasip2::filesystem::preopens::get_directories;
use wasip2::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};

wit_bindgen::generate!({ world: "hostile", path: "wit" });

struct Hostile;

fn root() -> Result<Descriptor, String> {
    get_directories()
        .into_iter()
        .next()
        .map(|(d, _)| d)
        .ok_or_else(|| "no preopened directories".to_string())
}

fn fail(e: ErrorCode) -> String {
    e.name().to_string()
}

fn open(path: &str, oflags: OpenFlags, flags: DescriptorFlags) -> Result<Descriptor, String> {
    root()?
        .open_at(PathFlags::SYMLINK_FOLLOW, path, oflags, flags)
        .map_err(fail)
}

impl Guest for Hostile {
    fn preopens() -> Vec<String> {
        get_directories().into_iter().map(|(_, p)| p).collect()
    }

    fn read_at(path: String) -> Result<String, String> {
        let file = open(&path, OpenFlags::empty(), DescriptorFlags::READ)?;
        let mut out = Vec::new();
        loop {
            let (chunk, end) = file.read(65536, out.len() as u64).map_err(fail)?;
            out.extend_from_slice(&chunk);
            if end || chunk.is_empty() {
                break;
            }
        }
        String::from_utf8(out).map_err(|e| e.to_string())
    }

    fn write_at(path: String, contents: String) -> Result<(), String> {
        let file = open(
            &path,
            OpenFlags::CREATE | OpenFlags::TRUNCATE,
            DescriptorFlags::WRITE,
        )?;
        file.write(contents.as_bytes(), 0).map_err(fail)?;
        Ok(())
    }

    fn append_at(path: String, contents: String) -> Result<(), String> {
        let file = open(&path, OpenFlags::empty(), DescriptorFlags::WRITE)?;
        let size = file.stat().map_err(fail)?.size;
        file.write(contents.as_bytes(), size).map_err(fail)?;
        Ok(())
    }

    fn truncate_at(path: String) -> Result<(), String> {
        open(&path, OpenFlags::TRUNCATE, DescriptorFlags::WRITE).map(|_| ())
    }

    fn delete_at(path: String) -> Result<(), String> {
        root()?.unlink_file_at(&path).map_err(fail)
    }

    fn rename_at(source: String, destination: String) -> Result<(), String> {
        let dir = root()?;
        dir.rename_at(&source, &dir, &destination).map_err(fail)
    }

    fn mkdir_at(path: String) -> Result<(), String> {
        root()?.create_directory_at(&path).map_err(fail)
    }

    fn symlink_at(target: String, link: String) -> Result<(), String> {
        root()?.symlink_at(&target, &link).map_err(fail)
    }

    fn hard_link_at(existing: String, link: String) -> Result<(), String> {
        let dir = root()?;
        dir.link_at(PathFlags::empty(), &existing, &dir, &link)
            .map_err(fail)
    }

    fn list_at(path: String) -> Result<Vec<String>, String> {
        let dir = open(&path, OpenFlags::DIRECTORY, DescriptorFlags::READ)?;
        let entries = dir.read_directory().map_err(fail)?;
        let mut names = Vec::new();
        while let Some(entry) = entries.read_directory_entry().map_err(fail)? {
            names.push(entry.name);
        }
        names.sort();
        Ok(names)
    }

    fn read_std(path: String) -> Result<String, String> {
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|e| e.to_string())?;
        Ok(text)
    }

    fn env_names() -> Vec<String> {
        let mut names: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
        names.sort();
        names
    }

    fn env_var(name: String) -> Option<String> {
        std::env::var(name).ok()
    }

    fn tcp_connect(address: String) -> Result<(), String> {
        std::net::TcpStream::connect(address.as_str())
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn lookup(host: String) -> Result<Vec<String>, String> {
        use std::net::ToSocketAddrs;
        (host.as_str(), 80)
            .to_socket_addrs()
            .map(|addrs| addrs.map(|a| a.ip().to_string()).collect())
            .map_err(|e| e.to_string())
    }

    fn http_get(authority: String) -> Result<u16, String> {
        use wasip2::http::outgoing_handler::handle;
        use wasip2::http::types::{Fields, OutgoingRequest, Scheme};
        let request = OutgoingRequest::new(Fields::new());
        request.set_scheme(Some(&Scheme::Http)).ok();
        request.set_authority(Some(&authority)).ok();
        request.set_path_with_query(Some("/")).ok();
        let response = handle(request, None).map_err(|e| format!("{e:?}"))?;
        response.subscribe().block();
        match response.get() {
            Some(Ok(Ok(r))) => Ok(r.status()),
            Some(Ok(Err(e))) => Err(format!("{e:?}")),
            _ => Err("no response".into()),
        }
    }

    fn ping() -> String {
        "pong".into()
    }

    fn shout(text: String) {
        eprintln!("{text}");
    }
}

export!(Hostile);
