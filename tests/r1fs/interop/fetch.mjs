// Fetch ipfs:// URLs with @helia/verified-fetch through ONE trustless gateway (an r1os node) and write
// each body to OUT_DIR/<i>.bin. verified-fetch asks the gateway for raw blocks and CARs and checks
// every block against its CID itself, so a body it returns is verified content.
//
//   node fetch.mjs GATEWAY_URL OUT_DIR ipfs://CID[/path] ...
//
// Prints one JSON line per URL: {"url", "status", "bytes", "type"}; exits 1 if any is not a 200.

// Node 20 lacks Promise.withResolvers (Node 22), which some of helia's dependencies call.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { writeFile } = await import('node:fs/promises')
const { createHeliaLight } = await import('helia')
const { withHTTP } = await import('@helia/http')
const { fallbackRouter } = await import('@helia/fallback-router')
const { createVerifiedFetchWithHelia } = await import('@helia/verified-fetch')

const [gateway, outDir, ...urls] = process.argv.slice(2)

// No delegated routers, no public gateways: the node under test is the only place blocks come from.
const helia = withHTTP(createHeliaLight(), {
  delegatedRouters: [],
  recursiveGateways: [],
  allowInsecure: true,
  allowLocal: true
})
// A router that names the node as the provider of every CID. (helia's fallback router does this, but
// helia consults fallback routers only after at least one other router, and here there is none.)
const only = fallbackRouter({ gateways: [gateway], shuffle: false })
only.capabilities = () => ['findProviders']
helia.addRouter(only)
await helia.start()
const vf = await createVerifiedFetchWithHelia(helia)

let failed = false
for (const [i, url] of urls.entries()) {
  try {
    const r = await vf(url, { signal: AbortSignal.timeout(20000) })
    const body = new Uint8Array(await r.arrayBuffer())
    await writeFile(`${outDir}/${i}.bin`, body)
    console.log(JSON.stringify({ url, status: r.status, bytes: body.length, type: r.headers.get('content-type') }))
    if (r.status !== 200) failed = true
  } catch (err) {
    console.log(JSON.stringify({ url, status: 0, error: `${err.name}: ${err.message}` }))
    failed = true
  }
}
await vf.stop()
await helia.stop()
process.exit(failed ? 1 : 0)
