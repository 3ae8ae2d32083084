// Produce R1FS CID test vectors with the JavaScript IPFS importer (ipfs-unixfs-importer), set up the
// way kubo's `ipfs add --cid-version=1` builds files: raw leaves, CIDv1, fixed 256 KiB chunks,
// balanced layout with at most 174 links per node, a single-chunk file reduced to its raw leaf.
//
// Install the importer in a throwaway folder, then run this script from anywhere:
//   mkdir /tmp/r1fs-npm && cd /tmp/r1fs-npm && npm init -y && npm install ipfs-unixfs-importer@17.1.1 blockstore-core
//   NODE_PATH=/tmp/r1fs-npm/node_modules node tests/r1fs/vectors/gen_vectors.mjs > tests/r1fs/vectors/js_importer.json
// (ES modules ignore NODE_PATH, so the script resolves the packages from R1FS_NPM_DIR or NODE_PATH itself.)
//
// Content rule for every vector: byte i of the file is (i mod 251), for i = 0 .. size-1.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'

const base = process.env.R1FS_NPM_DIR ?? (process.env.NODE_PATH ?? '').split(path.delimiter)[0]
if (!base) {
  console.error('set R1FS_NPM_DIR (or NODE_PATH) to the node_modules folder holding ipfs-unixfs-importer')
  process.exit(2)
}
const require = createRequire(path.join(path.resolve(base), 'x.js'))
const load = async (name) => import(require.resolve(name))
const { importer } = await load('ipfs-unixfs-importer')
const { fixedSize } = await load('ipfs-unixfs-importer/chunker')
const { balanced } = await load('ipfs-unixfs-importer/layout')
const pkg = JSON.parse(readFileSync(path.join(path.resolve(base), 'ipfs-unixfs-importer', 'package.json'), 'utf8'))

const CHUNK = 262144
const KiB = 1024
const MiB = 1024 * KiB

// Streams the content in 1 MiB pieces so large vectors do not need one huge buffer.
async function * content (size) {
  const piece = MiB
  for (let off = 0; off < size; off += piece) {
    const n = Math.min(piece, size - off)
    const buf = new Uint8Array(n)
    for (let j = 0; j < n; j++) buf[j] = (off + j) % 251
    yield buf
  }
}

// Keeps nothing: only the CIDs are wanted, not the blocks.
const sink = { put: async (cid) => cid }

const vectors = [
  ['empty', 0],
  ['one-byte', 1],
  ['256KiB', CHUNK],
  ['256KiB+1', CHUNK + 1],
  ['10MiB', 10 * MiB],
  ['174-chunks', 174 * CHUNK],
  ['174-chunks+1', 174 * CHUNK + 1],
  ['45MiB', 45 * MiB]
]

const out = []
for (const [name, size] of vectors) {
  let root
  for await (const entry of importer([{ content: content(size) }], sink, {
    cidVersion: 1,
    rawLeaves: true,
    reduceSingleLeafToSelf: true,
    chunker: fixedSize({ chunkSize: CHUNK }),
    layout: balanced({ maxChildrenPerNode: 174 }),
    wrapWithDirectory: false
  })) {
    root = entry
  }
  out.push({
    name,
    size,
    content: 'byte i = i mod 251',
    cid: root.cid.toString(),
    producer: `ipfs-unixfs-importer ${pkg.version} (node ${process.version}); cidVersion 1, rawLeaves, fixedSize 262144, balanced 174, reduceSingleLeafToSelf`
  })
}
process.stdout.write(JSON.stringify({ vectors: out }, null, 2) + '\n')
