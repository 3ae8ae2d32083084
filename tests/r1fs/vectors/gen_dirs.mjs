// UnixFS directory vectors from the JavaScript IPFS importer (ipfs-unixfs-importer), set up the way
// kubo's `ipfs add -r --cid-version=1` builds a folder: CIDv1, raw leaves, fixed 256 KiB chunks,
// balanced layout of at most 174 links, a one-chunk file reduced to its raw leaf, dag-pb folders with
// links sorted by name, and a folder turned into a HAMT shard (fanout 256, murmur3-x64-64) when the
// sum over its links of (name bytes + CID bytes) is more than 262144 (boxo's HAMTShardingSize with its
// default "links" size estimation; the importer's shardSplitStrategy 'links-bytes').
//
// The trees are described in dir_trees.json (the Python test builds the same ones). To re-make the
// recorded results:
//   cd tests/r1fs/vectors/npm && npm install
//   node tests/r1fs/vectors/gen_dirs.mjs > tests/r1fs/vectors/js_dirs.json
// The packages are looked up in R1FS_NPM_DIR (a node_modules folder) or else in vectors/npm/node_modules.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const base = process.env.R1FS_NPM_DIR ?? path.join(here, 'npm', 'node_modules')
const require = createRequire(path.join(path.resolve(base), 'x.js'))
const load = async (name) => import(require.resolve(name))
const { importer } = await load('ipfs-unixfs-importer')
const { fixedSize } = await load('ipfs-unixfs-importer/chunker')
const { balanced } = await load('ipfs-unixfs-importer/layout')
const { MemoryBlockstore } = await load('blockstore-core/memory')
const pkg = JSON.parse(readFileSync(path.join(path.resolve(base), 'ipfs-unixfs-importer', 'package.json'), 'utf8'))

const trees = JSON.parse(readFileSync(path.join(here, 'dir_trees.json'), 'utf8')).trees

const OPTIONS = {
  cidVersion: 1,
  rawLeaves: true,
  reduceSingleLeafToSelf: true,
  chunker: fixedSize({ chunkSize: 262144 }),
  layout: balanced({ maxChildrenPerNode: 174 }),
  shardSplitThresholdBytes: 262144,
  shardSplitStrategy: 'links-bytes',
  shardFanoutBits: 8,
  wrapWithDirectory: false
}

function bytesOf (size, seed) {
  const buf = new Uint8Array(size)
  for (let i = 0; i < size; i++) buf[i] = (i + seed) % 251
  return buf
}

function * entries (tree) {
  yield { path: 'root' } // the root folder itself (alone: an empty folder)
  for (const e of tree.entries) {
    if (e.many) {
      const { prefix, digits, suffix, count } = e.many
      for (let i = 0; i < count; i++) {
        const name = `${prefix}${String(i).padStart(digits, '0')}${suffix}`
        yield { path: `root/${name}`, content: new TextEncoder().encode(name) }
      }
    } else if (e.dir) {
      yield { path: `root/${e.path}` }
    } else {
      yield { path: `root/${e.path}`, content: bytesOf(e.size, e.seed) }
    }
  }
}

const out = []
for (const tree of trees) {
  let root
  for await (const entry of importer(entries(tree), new MemoryBlockstore(), OPTIONS)) {
    if (entry.path === 'root') root = entry
  }
  out.push({ name: tree.name, cid: root.cid.toString(), size: Number(root.size) })
}
console.log(JSON.stringify({
  source: `npm ipfs-unixfs-importer ${pkg.version}, options ${JSON.stringify({ ...OPTIONS, chunker: 'fixedSize 262144', layout: 'balanced 174' })}`,
  trees: 'dir_trees.json',
  vectors: out
}, null, 2))
