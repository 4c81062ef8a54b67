/**
 * A small, dependency-free MessagePack codec for the worker protocol (docs/protocol.md, "Values").
 *
 * The Encoder appends to one growable buffer that is reused between messages, so encoding a
 * small frame allocates nothing but the strings' bytes; the worker frames and queues its output
 * directly in that buffer. The Decoder reads from any Uint8Array range and copies `bin` out, so
 * the caller may reuse its read buffer afterwards.
 */

/** Nesting deeper than this (or a cycle, which reaches it) is refused by the encoder. */
export const MAX_ENCODE_DEPTH = 512;
/** The decoder refuses input nested deeper than this, instead of overflowing the stack. */
export const MAX_DECODE_DEPTH = 1024;

const TIMESTAMP_EXT = -1;
const TWO_32 = 4294967296;
const MIN_BUFFER = 256;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

/** Objects that JSON would send as {} but that are no data: a mistake to name, not to send. */
const NOT_DATA: Record<string, string> = {
  "[object Promise]": "a Promise (a missing await, or Promise.all around a map of async calls?)",
  "[object Generator]": "a generator (spread it into an array: [...gen])",
  "[object AsyncGenerator]": "an async generator (collect it first: Array.fromAsync(gen))",
  "[object Response]": "a fetch Response (its body: await response.json() or .text())",
  "[object Request]": "a fetch Request",
  "[object ReadableStream]": "a ReadableStream (read it first: await new Response(stream).text())",
  "[object WritableStream]": "a WritableStream",
  "[object Blob]": "a Blob (its bytes: new Uint8Array(await blob.arrayBuffer()))",
  "[object File]": "a File (its bytes: new Uint8Array(await file.arrayBuffer()))",
  "[object WeakMap]": "a WeakMap",
  "[object WeakSet]": "a WeakSet",
  "[object AbortSignal]": "an AbortSignal",
};

function notSerializable(what: string): TypeError {
  return new TypeError(`value is not serializable: ${what}`);
}

/** Appends MessagePack encodings of values to a growable, reusable buffer. */
/** Thrown by an Encoder whose output would pass its `limit`; nothing is allocated for it. */
export class EncodingTooLarge extends RangeError {
  constructor(readonly limit: number) {
    super(`encoding exceeds ${limit} bytes`);
    this.name = "EncodingTooLarge";
  }
}

export class Encoder {
  buf: Uint8Array;
  view: DataView;
  /** Number of bytes written so far; the encoding is `buf.subarray(0, pos)`. */
  pos = 0;
  /** Position the encoding may not pass: strings and binaries that would are refused before
   * they are copied (EncodingTooLarge), so an oversize value costs no buffer of its size. */
  limit = Infinity;

  constructor(initialSize = 65536) {
    this.buf = new Uint8Array(Math.max(initialSize, MIN_BUFFER));
    this.view = new DataView(this.buf.buffer);
  }

  /** A copy of `value`'s encoding (the internal buffer is reset and reused). */
  encode(value: unknown): Uint8Array {
    this.pos = 0;
    this.write(value);
    return this.buf.slice(0, this.pos);
  }

  /** Appends `value`'s encoding. On a TypeError, `pos` is left where the value started. */
  write(value: unknown): void {
    const start = this.pos;
    try {
      this.value(value, 0);
    } catch (e) {
      this.pos = start;
      throw e;
    }
  }

  /** Hands out the bytes written so far and continues with `next` (or a fresh buffer) empty. */
  take(next?: Uint8Array): Uint8Array {
    const out = this.buf.subarray(0, this.pos);
    this.buf = next && next.length >= MIN_BUFFER ? next : new Uint8Array(65536);
    this.view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    this.pos = 0;
    return out;
  }

  /** Makes room for `n` more bytes. */
  ensure(n: number): void {
    if (this.pos > this.limit) throw new EncodingTooLarge(this.limit); // many small values
    const need = this.pos + n;
    if (need <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  private value(v: unknown, depth: number): void {
    switch (typeof v) {
      case "string":
        return this.str(v);
      case "number":
        return this.num(v);
      case "boolean":
        this.ensure(1);
        this.buf[this.pos++] = v ? 0xc3 : 0xc2;
        return;
      case "undefined":
        this.ensure(1);
        this.buf[this.pos++] = 0xc0;
        return;
      case "bigint":
        return this.bigint(v);
      case "object":
        if (v === null) {
          this.ensure(1);
          this.buf[this.pos++] = 0xc0;
          return;
        }
        return this.object(v as object, depth);
      default:
        // function, symbol
        throw notSerializable(typeof v);
    }
  }

  private num(v: number): void {
    this.ensure(9);
    const b = this.buf;
    let p = this.pos;
    if (Number.isSafeInteger(v) && !Object.is(v, -0)) { // -0 stays a float, as msgspec sends it
      if (v >= 0) {
        if (v < 0x80) {
          b[p++] = v;
        } else if (v < 0x100) {
          b[p++] = 0xcc;
          b[p++] = v;
        } else if (v < 0x10000) {
          b[p++] = 0xcd;
          b[p++] = v >>> 8;
          b[p++] = v;
        } else if (v < TWO_32) {
          b[p++] = 0xce;
          this.view.setUint32(p, v);
          p += 4;
        } else {
          b[p++] = 0xcf;
          this.view.setUint32(p, Math.floor(v / TWO_32));
          this.view.setUint32(p + 4, v >>> 0);
          p += 8;
        }
      } else if (v >= -32) {
        b[p++] = v & 0xff;
      } else if (v >= -0x80) {
        b[p++] = 0xd0;
        b[p++] = v & 0xff;
      } else if (v >= -0x8000) {
        b[p++] = 0xd1;
        this.view.setInt16(p, v);
        p += 2;
      } else if (v >= -0x80000000) {
        b[p++] = 0xd2;
        this.view.setInt32(p, v);
        p += 4;
      } else {
        const hi = Math.floor(v / TWO_32);
        b[p++] = 0xd3;
        this.view.setInt32(p, hi);
        this.view.setUint32(p + 4, v - hi * TWO_32);
        p += 8;
      }
    } else {
      b[p++] = 0xcb;
      this.view.setFloat64(p, v);
      p += 8;
    }
    this.pos = p;
  }

  private bigint(v: bigint): void {
    this.ensure(9);
    if (v >= 0n) {
      if (v > 0xffffffffffffffffn) throw notSerializable("bigint outside the 64-bit range");
      this.buf[this.pos++] = 0xcf;
      this.view.setBigUint64(this.pos, v);
    } else {
      if (v < -0x8000000000000000n) throw notSerializable("bigint outside the 64-bit range");
      this.buf[this.pos++] = 0xd3;
      this.view.setBigInt64(this.pos, v);
    }
    this.pos += 8;
  }

  private str(s: string): void {
    const n = s.length;
    if (n < 48) {
      // Short strings: encode by hand, which beats a TextEncoder call. At most 3 bytes per
      // UTF-16 unit, so n < 48 always fits the 1-byte (fixstr/str8) header of 2 bytes.
      this.ensure(2 + n * 3);
      const b = this.buf;
      const start = this.pos;
      let p = start + (n * 3 < 32 ? 1 : 2);
      const body = p;
      for (let i = 0; i < n; i++) {
        let c = s.charCodeAt(i);
        if (c < 0x80) {
          b[p++] = c;
        } else if (c < 0x800) {
          b[p++] = 0xc0 | (c >> 6);
          b[p++] = 0x80 | (c & 0x3f);
        } else {
          if (c >= 0xd800 && c <= 0xdfff) {
            const d = i + 1 < n ? s.charCodeAt(i + 1) : 0;
            if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
              i++;
              c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
              b[p++] = 0xf0 | (c >> 18);
              b[p++] = 0x80 | ((c >> 12) & 0x3f);
              b[p++] = 0x80 | ((c >> 6) & 0x3f);
              b[p++] = 0x80 | (c & 0x3f);
              continue;
            }
            c = 0xfffd; // lone surrogate, as TextEncoder does
          }
          b[p++] = 0xe0 | (c >> 12);
          b[p++] = 0x80 | ((c >> 6) & 0x3f);
          b[p++] = 0x80 | (c & 0x3f);
        }
      }
      const len = p - body;
      if (body - start === 1) {
        b[start] = 0xa0 | len;
      } else if (len < 32) {
        // Reserved str8 but fixstr suffices: shift the body left by one byte.
        b.copyWithin(start + 1, body, p);
        b[start] = 0xa0 | len;
        p--;
      } else {
        b[start] = 0xd9;
        b[start + 1] = len;
      }
      this.pos = p;
      return;
    }
    // Long strings: TextEncoder.encodeInto straight into the buffer, with a header sized for
    // the worst case, shifted down afterwards if the real length needs a smaller one.
    if (this.pos + n > this.limit) throw new EncodingTooLarge(this.limit); // UTF-8 >= n bytes
    const max = n * 3;
    const hdr = max < 0x100 ? 2 : max < 0x10000 ? 3 : 5;
    this.ensure(hdr + max);
    const start = this.pos;
    const { written } = textEncoder.encodeInto(s, this.buf.subarray(start + hdr));
    const len = written;
    const need = len < 32 ? 1 : len < 0x100 ? 2 : len < 0x10000 ? 3 : 5;
    if (need < hdr) this.buf.copyWithin(start + need, start + hdr, start + hdr + len);
    this.header(need, len, 0xa0, 0xd9);
    this.pos = start + need + len;
  }

  /** Writes a str/bin/array/map header of a known size class at `pos` (not advancing it). */
  private header(size: number, len: number, fix: number, first: number): void {
    const b = this.buf;
    const p = this.pos;
    if (size === 1) {
      b[p] = fix | len;
    } else if (size === 2) {
      b[p] = first;
      b[p + 1] = len;
    } else if (size === 3) {
      b[p] = first + 1;
      b[p + 1] = len >>> 8;
      b[p + 2] = len;
    } else {
      b[p] = first + 2;
      this.view.setUint32(p + 1, len);
    }
  }

  private arrayHeader(n: number): void {
    this.ensure(5);
    const b = this.buf;
    if (n < 16) {
      b[this.pos++] = 0x90 | n;
    } else if (n < 0x10000) {
      b[this.pos] = 0xdc;
      b[this.pos + 1] = n >>> 8;
      b[this.pos + 2] = n;
      this.pos += 3;
    } else {
      b[this.pos] = 0xdd;
      this.view.setUint32(this.pos + 1, n);
      this.pos += 5;
    }
  }

  private mapHeader(n: number): void {
    this.ensure(5);
    const b = this.buf;
    if (n < 16) {
      b[this.pos++] = 0x80 | n;
    } else if (n < 0x10000) {
      b[this.pos] = 0xde;
      b[this.pos + 1] = n >>> 8;
      b[this.pos + 2] = n;
      this.pos += 3;
    } else {
      b[this.pos] = 0xdf;
      this.view.setUint32(this.pos + 1, n);
      this.pos += 5;
    }
  }

  private bin(bytes: Uint8Array): void {
    const n = bytes.length;
    if (this.pos + n > this.limit) throw new EncodingTooLarge(this.limit);
    this.ensure(5 + n);
    if (n < 0x100) {
      this.header(2, n, 0, 0xc4);
      this.pos += 2;
    } else if (n < 0x10000) {
      this.header(3, n, 0, 0xc4);
      this.pos += 3;
    } else {
      this.header(5, n, 0, 0xc4);
      this.pos += 5;
    }
    this.buf.set(bytes, this.pos);
    this.pos += n;
  }

  private date(d: Date): void {
    const ms = d.getTime();
    if (Number.isNaN(ms)) {
      // An invalid Date has no instant; JSON.stringify gives null for it too.
      this.ensure(1);
      this.buf[this.pos++] = 0xc0;
      return;
    }
    const sec = Math.floor(ms / 1000);
    const nsec = (ms - sec * 1000) * 1e6;
    this.ensure(15);
    const b = this.buf;
    const v = this.view;
    const p = this.pos;
    if (sec >= 0 && sec < 0x400000000) {
      if (nsec === 0 && sec < TWO_32) {
        b[p] = 0xd6; // fixext 4: timestamp 32
        b[p + 1] = 0xff;
        v.setUint32(p + 2, sec);
        this.pos = p + 6;
      } else {
        b[p] = 0xd7; // fixext 8: timestamp 64 = nsec (30 bits) << 34 | sec (34 bits)
        b[p + 1] = 0xff;
        v.setUint32(p + 2, nsec * 4 + Math.floor(sec / TWO_32));
        v.setUint32(p + 6, sec >>> 0);
        this.pos = p + 10;
      }
    } else {
      b[p] = 0xc7; // ext 8, length 12: timestamp 96
      b[p + 1] = 12;
      b[p + 2] = 0xff;
      v.setUint32(p + 3, nsec);
      const hi = Math.floor(sec / TWO_32);
      v.setInt32(p + 7, hi);
      v.setUint32(p + 11, sec - hi * TWO_32);
      this.pos = p + 15;
    }
  }

  private object(o: object, depth: number): void {
    if (++depth > MAX_ENCODE_DEPTH) {
      throw notSerializable(`cyclic or nested deeper than ${MAX_ENCODE_DEPTH} levels`);
    }
    if (Array.isArray(o)) {
      const n = o.length;
      this.arrayHeader(n);
      for (let i = 0; i < n; i++) this.value(o[i], depth);
      return;
    }
    const toJSON = (o as { toJSON?: unknown }).toJSON;
    const proto = Object.getPrototypeOf(o);
    if ((proto === Object.prototype || proto === null) && toJSON === undefined) return this.plain(o, depth);
    if (o instanceof Uint8Array) return this.bin(o);
    if (ArrayBuffer.isView(o)) return this.bin(new Uint8Array(o.buffer, o.byteOffset, o.byteLength));
    // Brand checks by tag, not instanceof: values from another realm (an execution's own V8
    // context) are Dates, Maps and buffers too.
    const tag = Object.prototype.toString.call(o);
    if (tag === "[object ArrayBuffer]" || tag === "[object SharedArrayBuffer]") {
      return this.bin(new Uint8Array(o as ArrayBuffer));
    }
    if (tag === "[object Date]") return this.date(o as Date);
    if (tag === "[object Map]") {
      const m = o as Map<unknown, unknown>;
      this.mapHeader(m.size);
      for (const [k, val] of m) {
        const t = typeof k;
        if (k !== null && t !== "string" && t !== "number" && t !== "bigint" && t !== "boolean") {
          throw notSerializable(`Map key of type ${t}`);
        }
        this.value(k, depth);
        this.value(val, depth);
      }
      return;
    }
    if (tag === "[object Set]") {
      const set = o as Set<unknown>;
      this.arrayHeader(set.size);
      for (const item of set) this.value(item, depth);
      return;
    }
    if (typeof toJSON === "function") return this.value(toJSON.call(o, ""), depth);
    if (tag === "[object Number]" || tag === "[object String]" || tag === "[object Boolean]") {
      return this.value((o as { valueOf(): unknown }).valueOf(), depth);
    }
    const hint = NOT_DATA[tag];
    if (hint !== undefined) throw notSerializable(hint);
    if (tag === "[object Headers]") return this.headers(o as Headers, depth);
    // Class instances and other objects: their own enumerable string keys, like JSON.
    return this.plain(o, depth);
  }

  /** Headers as a map of name to value; set-cookie, which may repeat, as a list of its values. */
  private headers(h: Headers, depth: number): void {
    const out: Record<string, unknown> = Object.create(null); // a header named __proto__ is a header
    for (const [k, val] of h) out[k] = k === "set-cookie" ? h.getSetCookie() : val;
    this.plain(out, depth);
  }

  private plain(o: object, depth: number): void {
    const keys = Object.keys(o);
    const n = keys.length;
    this.mapHeader(n);
    const rec = o as Record<string, unknown>;
    for (let i = 0; i < n; i++) {
      const k = keys[i];
      this.str(k);
      this.value(rec[k], depth);
    }
  }
}

/** Reads MessagePack values from a byte range. */
export class Decoder {
  private buf: Uint8Array = new Uint8Array(0);
  private view: DataView = new DataView(this.buf.buffer);
  private pos = 0;
  private end = 0;

  /** Decodes exactly one value occupying `buf[start:end]`; anything else throws. */
  decode(buf: Uint8Array, start = 0, end = buf.length): unknown {
    if (buf !== this.buf) {
      this.buf = buf;
      this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    }
    this.pos = start;
    this.end = end;
    const v = this.value(0);
    if (this.pos !== end) throw new RangeError(`${end - this.pos} extra bytes after the value`);
    return v;
  }

  /** Drops the reference to the last input, so that a large buffer can be collected. */
  release(): void {
    this.buf = EMPTY;
    this.view = EMPTY_VIEW;
  }

  private need(n: number): number {
    const p = this.pos;
    if (p + n > this.end) throw new RangeError("truncated MessagePack data");
    this.pos = p + n;
    return p;
  }

  private value(depth: number): unknown {
    const b = this.buf;
    const t = b[this.need(1)];
    if (t < 0x80) return t;
    if (t >= 0xe0) return t - 0x100;
    if (t >= 0xa0 && t < 0xc0) return this.str(t & 0x1f);
    if (t >= 0x80 && t < 0x90) return this.map(t & 0x0f, depth);
    if (t >= 0x90 && t < 0xa0) return this.array(t & 0x0f, depth);
    const v = this.view;
    let p: number;
    switch (t) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return this.bin(b[this.need(1)]);
      case 0xc5:
        return this.bin(v.getUint16(this.need(2)));
      case 0xc6:
        return this.bin(v.getUint32(this.need(4)));
      case 0xc7:
        return this.ext(b[this.need(1)]);
      case 0xc8:
        return this.ext(v.getUint16(this.need(2)));
      case 0xc9:
        return this.ext(v.getUint32(this.need(4)));
      case 0xca:
        return v.getFloat32(this.need(4));
      case 0xcb:
        return v.getFloat64(this.need(8));
      case 0xcc:
        return b[this.need(1)];
      case 0xcd:
        return v.getUint16(this.need(2));
      case 0xce:
        return v.getUint32(this.need(4));
      case 0xcf: {
        p = this.need(8);
        const hi = v.getUint32(p);
        if (hi < 0x200000) return hi * TWO_32 + v.getUint32(p + 4);
        return v.getBigUint64(p);
      }
      case 0xd0:
        return v.getInt8(this.need(1));
      case 0xd1:
        return v.getInt16(this.need(2));
      case 0xd2:
        return v.getInt32(this.need(4));
      case 0xd3: {
        p = this.need(8);
        const hi = v.getInt32(p);
        if (hi >= -0x200000 && hi < 0x200000) {
          const n = hi * TWO_32 + v.getUint32(p + 4);
          if (Number.isSafeInteger(n)) return n;
        }
        return v.getBigInt64(p);
      }
      case 0xd4:
        return this.ext(1);
      case 0xd5:
        return this.ext(2);
      case 0xd6:
        return this.ext(4);
      case 0xd7:
        return this.ext(8);
      case 0xd8:
        return this.ext(16);
      case 0xd9:
        return this.str(b[this.need(1)]);
      case 0xda:
        return this.str(v.getUint16(this.need(2)));
      case 0xdb:
        return this.str(v.getUint32(this.need(4)));
      case 0xdc:
        return this.array(v.getUint16(this.need(2)), depth);
      case 0xdd:
        return this.array(v.getUint32(this.need(4)), depth);
      case 0xde:
        return this.map(v.getUint16(this.need(2)), depth);
      case 0xdf:
        return this.map(v.getUint32(this.need(4)), depth);
      default:
        throw new RangeError(`invalid MessagePack type byte 0x${t.toString(16)}`);
    }
  }

  private str(n: number): string {
    const p = this.need(n);
    const b = this.buf;
    return n < 32 ? shortString(b, p, n) : textDecoder.decode(b.subarray(p, p + n));
  }

  /** A map key: short ones come from a cache, since the same few keys recur in every frame. */
  private key(depth: number): string {
    const b = this.buf;
    const t = b[this.pos];
    const n = t - 0xa0;
    if (n < 0 || n > MAX_CACHED_KEY) {
      const k = this.value(depth);
      return typeof k === "string" ? k : keyString(k);
    }
    const p = this.need(1 + n) + 1;
    let bucket = keyCache[n];
    if (bucket === undefined) bucket = keyCache[n] = [];
    next: for (let j = 0; j < bucket.length; j++) {
      const e = bucket[j];
      const eb = e.bytes;
      for (let i = 0; i < n; i++) if (eb[i] !== b[p + i]) continue next;
      return e.key;
    }
    const key = shortString(b, p, n);
    if (bucket.length < KEYS_PER_LENGTH) bucket.push({ bytes: b.slice(p, p + n), key });
    return key;
  }

  private bin(n: number): Uint8Array {
    const p = this.need(n);
    return this.buf.slice(p, p + n);
  }

  private array(n: number, depth: number): unknown[] {
    if (++depth > MAX_DECODE_DEPTH) throw new RangeError("MessagePack data nested too deeply");
    // Every element takes at least one byte: refuse absurd counts before allocating.
    if (n > this.end - this.pos) throw new RangeError("truncated MessagePack data");
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.value(depth);
    return out;
  }

  private map(n: number, depth: number): Record<string, unknown> {
    if (++depth > MAX_DECODE_DEPTH) throw new RangeError("MessagePack data nested too deeply");
    if (n * 2 > this.end - this.pos) throw new RangeError("truncated MessagePack data");
    const out: Record<string, unknown> = Object.create(null); // a header named __proto__ is a header
    for (let i = 0; i < n; i++) {
      const key = this.key(depth);
      const val = this.value(depth);
      if (key === "__proto__") {
        // Plain assignment would replace the object's prototype.
        Object.defineProperty(out, key, { value: val, enumerable: true, writable: true, configurable: true });
      } else {
        out[key] = val;
      }
    }
    return out;
  }

  private ext(n: number): Date {
    const type = this.view.getInt8(this.need(1));
    const p = this.need(n);
    if (type !== TIMESTAMP_EXT) throw new RangeError(`unsupported MessagePack extension type ${type}`);
    const v = this.view;
    let sec: number;
    let nsec: number;
    if (n === 4) {
      sec = v.getUint32(p);
      nsec = 0;
    } else if (n === 8) {
      const hi = v.getUint32(p);
      nsec = hi >>> 2;
      sec = (hi & 0x3) * TWO_32 + v.getUint32(p + 4);
    } else if (n === 12) {
      nsec = v.getUint32(p);
      sec = v.getInt32(p + 4) * TWO_32 + v.getUint32(p + 8);
    } else {
      throw new RangeError(`invalid timestamp extension length ${n}`);
    }
    return new Date(sec * 1000 + Math.floor(nsec / 1e6));
  }
}

/** Strings under 32 bytes: built by hand when ASCII, which beats a TextDecoder call. */
function shortString(b: Uint8Array, p: number, n: number): string {
  let s = "";
  for (let i = p; i < p + n; i++) {
    const c = b[i];
    if (c >= 0x80) return textDecoder.decode(b.subarray(p, p + n));
    s += String.fromCharCode(c);
  }
  return s;
}

const MAX_CACHED_KEY = 16;
const KEYS_PER_LENGTH = 16;
/** Decoded map keys by byte length (shared by all decoders: keys are immutable strings). */
const keyCache: Array<Array<{ bytes: Uint8Array; key: string }>> = [];

const EMPTY = new Uint8Array(0);
const EMPTY_VIEW = new DataView(EMPTY.buffer);

/** A map key that is not a string becomes an object key the way JavaScript would make it. */
function keyString(k: unknown): string {
  if (k instanceof Uint8Array) return textDecoder.decode(k);
  if (k !== null && typeof k === "object" && !(k instanceof Date)) {
    try {
      return JSON.stringify(k);
    } catch {
      return String(k);
    }
  }
  return String(k);
}

const sharedEncoder = new Encoder(4096);
const sharedDecoder = new Decoder();

/** The MessagePack encoding of `value` (a new Uint8Array). Throws TypeError if unencodable. */
export function encode(value: unknown): Uint8Array {
  return sharedEncoder.encode(value);
}

/** Decodes one MessagePack value filling all of `bytes`. */
export function decode(bytes: Uint8Array): unknown {
  return sharedDecoder.decode(bytes);
}
