// The browser build's virtual module (scripts/build-web.mjs): every kernels/*.wgsl, by basename
// without .wgsl, mapped to its WGSL source, compiled into the bundle so the page fetches no kernels.
declare module 'semfreeze:kernels' {
  const kernels: Record<string, string>;
  export default kernels;
}
