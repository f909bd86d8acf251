"""benchmarks/meshes.py: the ground-truth meshes are as designed and its renderer keeps the project's conventions."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial import Delaunay

from ai_modules.cameras import orbit_camera, project, ring_cameras
from benchmarks.meshes import (AMBIENT, DIFFUSE, EXTENT, LIGHT, MESHES, TONE_HIGH, TONE_LOW, MeshRenderer, Part,
                               TexturedMesh, box, photo)


@pytest.fixture(scope="module")
def meshes() -> dict[str, TexturedMesh]:
    return {name: make() for name, make in MESHES.items()}


def test_there_are_five_meshes_or_more(meshes: dict[str, TexturedMesh]) -> None:
    assert len(meshes) >= 5


@pytest.mark.parametrize("name", list(MESHES))
def test_every_part_is_closed_outward_and_inside_the_box(meshes: dict[str, TexturedMesh], name: str) -> None:
    scene = meshes[name]
    for part in scene.parts:
        assert part.mesh.is_watertight and part.mesh.is_winding_consistent
        assert part.mesh.volume > 0                                          # outward faces
        assert part.uvs.shape == (len(part.mesh.faces), 3, 2)
        assert TONE_LOW - 1e-6 <= part.texture.min() and part.texture.max() <= TONE_HIGH + 1e-6
    assert (np.abs(scene.bounds) <= EXTENT + 1e-9).all()


def test_surface_samples_leave_out_buried_parts(meshes: dict[str, TexturedMesh]) -> None:
    """The mug's handle (a torus through the wall, r 0.19..0.22) keeps only its outer arc."""
    points = meshes["mug"].sample_surface(4000, seed=0)
    r, z = np.hypot(points[:, 0], points[:, 1]), points[:, 2]
    assert 3000 < len(points) < 4000
    assert not ((r > 0.191) & (r < 0.219) & (np.abs(z) < 0.249)).any()      # nothing inside the wall
    assert (r > 0.23).sum() > 100                                             # the visible handle


def test_silhouette_matches_the_projected_vertices() -> None:
    """An off-centre, turned box: the rendered alpha must cover the convex hull of its vertices projected with
    `ai_modules.cameras.project` (the same viewmat and K), pixel centres at i + 0.5."""
    turn = trimesh.transformations.rotation_matrix(0.6, [0.3, 0.2, 1.0])
    turn[:3, 3] = (0.12, -0.18, 0.08)
    part = box((0.2, 0.12, 0.3), photo("brick"), transform=turn)
    renderer = MeshRenderer(TexturedMesh("box", (part,)))
    size = 96
    viewmats, ks = ring_cameras([35.0, 200.0], 25.0, size, 1.5)
    alpha = renderer.render(viewmats, ks, size, supersample=3).alpha
    centres = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1).reshape(-1, 2)
    for view, k, a in zip(viewmats, ks, alpha):
        uv, depth = project(part.mesh.vertices, view, k)
        assert (depth > 0).all()
        expected = (Delaunay(uv).find_simplex(centres) >= 0).reshape(size, size)  # pixel centre inside the hull
        rendered = a >= 0.5
        iou = (rendered & expected).sum() / (rendered | expected).sum()
        assert iou > 0.98, iou                                                # half a pixel off gives 0.90
        assert np.abs(np.argwhere(rendered).mean(0) - np.argwhere(expected).mean(0)).max() < 0.1


def test_a_textured_quad_has_the_texture_mean_colour_and_camera_depth() -> None:
    """A square facing the camera on +X maps the whole texture once: the coverage-weighted colour is the
    texture's mean times the Lambert factor; the depth is camera z (1.5 everywhere, not the ray length)."""
    texture = photo("astronaut")
    quad = trimesh.Trimesh([[0, -0.2, -0.2], [0, 0.2, -0.2], [0, 0.2, 0.2], [0, -0.2, 0.2]], [[0, 1, 2], [0, 2, 3]],
                           process=False)
    uvs = np.array([[[0, 1], [1, 1], [1, 0]], [[0, 1], [1, 0], [0, 0]]], dtype=np.float64)
    renderer = MeshRenderer(TexturedMesh("quad", (Part(quad, uvs, texture),)))
    out = renderer.render(orbit_camera(0.0, 0.0, 1.5)[None], ring_cameras([0.0], 0.0, 128)[1], 128, supersample=3)
    rgb, alpha, depth = out.rgb[0], out.alpha[0], out.depth[0]
    shade = AMBIENT + DIFFUSE * max(LIGHT[0], 0.0)                            # the normal seen is +X
    colour = ((rgb - (1 - alpha[..., None])) / shade).reshape(-1, 3).sum(0) / alpha.sum()
    np.testing.assert_allclose(colour, texture.reshape(-1, 3).mean(0), atol=0.01)
    assert abs(alpha.sum() - (0.4 * 280 / 256 * 128 / 1.5) ** 2) < 0.02 * alpha.sum()
    np.testing.assert_allclose(depth[alpha == 1], 1.5, atol=1e-5)
    left = rgb[:, :64][alpha[:, :64] == 1].mean(0) / shade                   # the photo's left: world -Y
    np.testing.assert_allclose(left, texture[:, :256].reshape(-1, 3).mean(0), atol=0.03)


def test_the_visible_hull_leaves_out_the_space_a_single_ring_cannot_carve(meshes: dict[str, TexturedMesh]) -> None:
    """From SyncDreamer's ring alone, the visual hull reaches below the mug; the visible hull does not."""
    import torch

    from ai_modules.cameras import SYNCDREAMER_RING
    from ai_modules.reconstruct import from_visible_hull, from_visual_hull

    scene = meshes["mug"]
    viewmats, ks = SYNCDREAMER_RING.cameras(64)
    truth = MeshRenderer(scene).render(viewmats, ks, 64, 1)
    views = [torch.from_numpy(np.ascontiguousarray(a)).float() for a in (truth.rgb, truth.alpha, viewmats, ks)]
    bottom = float(scene.bounds[0, 2]) - 0.02

    def below(g) -> float:  # noqa: ANN001
        return float((g.means[:, 2] < bottom).float().mean())

    hull = from_visual_hull(*views, num_points=3000, generator=torch.Generator().manual_seed(0))
    visible = from_visible_hull(*views, num_points=3000, generator=torch.Generator().manual_seed(0))
    assert below(hull) > 0.05 and below(visible) < 0.01 and visible.num == 3000
    colours = visible.sh_dc.abs().sum(1)
    assert torch.isfinite(colours).all() and float(colours.std()) > 0       # coloured by the views that see them
