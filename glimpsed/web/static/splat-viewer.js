// The job page's Gaussian-splat viewer: Spark (https://sparkjs.dev) on three.js, both served from
// /static/vendor. Our .splat/.ply hold world (X, Y, Z) (Z up) as (-Y, -Z, X), the Inria habit
// (ai_modules/export/functional.py); turned 180 degrees about X, three.js (Y up) shows world Z up, the
// photo's side (world +X) towards -z, where the camera starts.
import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { SparkRenderer, SplatMesh } from "@sparkjsdev/spark";

const canvas = document.getElementById("splat-viewer");
const renderer = new THREE.WebGLRenderer({ canvas, antialias: false, preserveDrawingBuffer: true });
renderer.setPixelRatio(1);
const scene = new THREE.Scene();
scene.background = new THREE.Color(0xf4f4f4);
scene.add(new SparkRenderer({ renderer }));
const camera = new THREE.PerspectiveCamera(40, canvas.width / canvas.height, 0.01, 100);
camera.position.set(0.7, 0.5, -1.5);
const controls = new OrbitControls(camera, canvas);
controls.target.set(0, 0, 0);
controls.update();

const splats = new SplatMesh({ url: canvas.dataset.src, fileName: canvas.dataset.name });
splats.quaternion.set(1, 0, 0, 0);
scene.add(splats);
splats.initialized.then(() => {
  canvas.dataset.loaded = "1";
  canvas.dispatchEvent(new Event("load"));
}).catch((error) => {
  canvas.dataset.error = String(error);
  console.error("splat viewer:", error);
});
renderer.setAnimationLoop(() => {
  controls.update();
  renderer.render(scene, camera);
});
