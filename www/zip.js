// A minimal ZIP writer (stored entries, no compression: PNG masks are compressed already).
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** files: [{name, bytes: Uint8Array}] -> a Blob holding the ZIP archive. */
export function zip(files) {
  const parts = [];
  const central = [];
  let offset = 0;
  for (const { name, bytes } of files) {
    const nameBytes = new TextEncoder().encode(name);
    const crc = crc32(bytes);
    const header = (signature, extra) => {
      const view = new DataView(new ArrayBuffer(extra ? 46 : 30));
      let p = 0;
      const u32 = (v) => { view.setUint32(p, v, true); p += 4; };
      const u16 = (v) => { view.setUint16(p, v, true); p += 2; };
      u32(signature);
      if (extra) u16(20); // version made by
      u16(20); u16(0x0800); u16(0); u16(0); u16(0x21); // version, UTF-8 names, stored, time, date (1980-01-01)
      u32(crc); u32(bytes.length); u32(bytes.length); u16(nameBytes.length); u16(0);
      if (extra) { u16(0); u16(0); u16(0); u32(0); u32(offset); }
      return new Uint8Array(view.buffer);
    };
    const local = header(0x04034b50, false);
    parts.push(local, nameBytes, bytes);
    central.push(header(0x02014b50, true), nameBytes);
    offset += local.length + nameBytes.length + bytes.length;
  }
  const size = central.reduce((n, part) => n + part.length, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, files.length, true);
  end.setUint16(10, files.length, true);
  end.setUint32(12, size, true);
  end.setUint32(16, offset, true);
  return new Blob([...parts, ...central, new Uint8Array(end.buffer)], { type: 'application/zip' });
}
