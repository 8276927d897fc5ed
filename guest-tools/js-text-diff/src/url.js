// URL parsing with the engine's WHATWG `URL` class. Errors are thrown as strings:
// ComponentizeJS turns a thrown string into the `err` of a `result`.

const HAS_SCHEME = /^\s*[a-zA-Z][a-zA-Z0-9+.-]*:/;

function parse(text, base) {
  try {
    return base === undefined ? new URL(text) : new URL(text, base);
  } catch {
    return null;
  }
}

export function urlParts(url, base) {
  let u;
  if (base === undefined || base === null) {
    u = parse(url);
    if (!u) {
      const hint = HAS_SCHEME.test(url) ? "" : "; it has no scheme: pass `base` to resolve a relative URL";
      throw `invalid URL: ${JSON.stringify(url)}${hint}`;
    }
  } else {
    const b = parse(base);
    if (!b) throw `invalid base URL: ${JSON.stringify(base)}`;
    u = parse(url, b);
    if (!u) throw `invalid URL: ${JSON.stringify(url)} (against base ${JSON.stringify(b.href)})`;
  }
  return {
    href: u.href,
    origin: u.origin,
    protocol: u.protocol,
    username: u.username,
    password: u.password,
    hostname: u.hostname,
    port: u.port === "" ? undefined : Number(u.port),
    pathname: u.pathname,
    search: u.search,
    params: [...u.searchParams].map(([name, value]) => ({ name, value })),
    hash: u.hash,
  };
}
